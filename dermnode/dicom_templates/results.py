"""The result objects for one analysed image: SEG (if a lesion mask exists), SR (always), KOS (on veto)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from dermnode.contract import SEGMENTATION_MODEL, LesionAnalysis
from dermnode.dicom_templates.kos import build_kos
from dermnode.dicom_templates.seg import build_seg
from dermnode.dicom_templates.sr import build_sr

DEFAULT_SERIES_NUMBER_BASE = 900


@dataclass
class ResultSet:
    seg: Dataset | None
    sr: Dataset
    kos: Dataset | None

    def datasets(self) -> list[Dataset]:
        """In sending order: SEG, SR, KOS (the SR references the SEG, the KOS both)."""
        return [ds for ds in (self.seg, self.sr, self.kos) if ds is not None]


def build_results(
    source: Dataset,
    analysis: LesionAnalysis,
    *,
    kos_enabled: bool = True,
    for_diagnostic_use: bool = False,
    series_number_base: int = DEFAULT_SERIES_NUMBER_BASE,
) -> ResultSet:
    """SEG when the analysis has a non-empty mask; SR always (no-lesion and failed said in coded
    form); KOS when the veto fires and ``kos_enabled``. Series numbers base, base+1, base+2."""
    seg = None
    if analysis.mask is not None and analysis.mask.any():
        model = next((m for m in analysis.models if m.name == SEGMENTATION_MODEL), None)
        seg = build_seg(
            source, analysis.mask, model=model, series_number=series_number_base, for_diagnostic_use=for_diagnostic_use
        )
    sr = build_sr(source, analysis, seg, series_number=series_number_base + 1, for_diagnostic_use=for_diagnostic_use)
    kos = None
    if kos_enabled and analysis.veto:
        kos = build_kos(source, sr, seg, analysis, series_number=series_number_base + 2)
    return ResultSet(seg=seg, sr=sr, kos=kos)
