"""The result objects for one analysed image: SEG (if a lesion mask exists), SR (always), KOS (on veto)."""

from __future__ import annotations

from dataclasses import dataclass

from copy import deepcopy

from pydicom import Dataset
from pydicom.charset import python_encoding

from dermnode.contract import SEGMENTATION_MODEL, LesionAnalysis
from dermnode.dicom_templates.kos import build_kos
from dermnode.dicom_templates.seg import build_seg
from dermnode.dicom_templates.sr import build_sr

DEFAULT_SERIES_NUMBER_BASE = 900
#: Patient and General Study attributes (Type 2 in the result IODs) carried through empty when a
#: source image lacks them.
TYPE2_CARRIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
)
#: Patient and Study attributes (Patient, General Study and Patient Study modules, all allowed in
#: SEG, SR and KOS) that every result repeats from its source when the source has them, so that the
#: image and its results describe one patient and one study (dcentvfy).
STUDY_LEVEL = (
    "IssuerOfPatientID", "OtherPatientIDsSequence", "PatientBirthTime", "EthnicGroup", "PatientComments",
    "PatientIdentityRemoved", "DeidentificationMethod", "StudyDescription", "ProcedureCodeSequence",
    "PatientAge", "PatientSize", "PatientWeight", "PatientSexNeutered", "AdmittingDiagnosesDescription",
)
#: The character set results are written in when the source declares one DICOM does not define.
FALLBACK_CHARACTER_SET = "ISO_IR 192"


@dataclass
class ResultSet:
    seg: Dataset | None
    sr: Dataset
    kos: Dataset | None

    def datasets(self) -> list[Dataset]:
        """In sending order: SEG, SR, KOS (the SR references the SEG, the KOS both)."""
        return [ds for ds in (self.seg, self.sr, self.kos) if ds is not None]


def carried_through(source: Dataset) -> Dataset:
    """A copy of ``source`` the result builders can reference (its pixel data shared, not copied):
    missing Type 2 Patient/Study attributes present and empty, and text re-declared as UTF-8 when
    the declared Specific Character Set is not one DICOM defines (pydicom decodes it with its
    default then)."""
    copy = Dataset()
    if getattr(source, "file_meta", None) is not None:
        copy.file_meta = deepcopy(source.file_meta)
    for element in source:  # iterating decodes every text value with the declared character set
        copy.add(element if element.keyword == "PixelData" else deepcopy(element))
    for keyword in TYPE2_CARRIED:
        if keyword not in copy:
            setattr(copy, keyword, "")
    declared = copy.get("SpecificCharacterSet")
    values = [declared] if isinstance(declared, str) else list(declared or [])
    if any(value not in python_encoding for value in values):
        copy.SpecificCharacterSet = FALLBACK_CHARACTER_SET
    return copy


def build_results(
    source: Dataset,
    analysis: LesionAnalysis,
    *,
    kos_enabled: bool = True,
    for_diagnostic_use: bool = False,
    series_number_base: int = DEFAULT_SERIES_NUMBER_BASE,
) -> ResultSet:
    """SEG when the analysis has a non-empty mask; SR always (no-lesion and failed said in coded
    form); KOS when the veto fires and ``kos_enabled``. Series numbers base, base+1, base+2.
    Missing Type 2 Patient/Study attributes are written empty (see :func:`carried_through`)."""
    source = carried_through(source)
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
    results = ResultSet(seg=seg, sr=sr, kos=kos)
    for result in results.datasets():
        repeat_study(source, result)
    return results


def repeat_study(source: Dataset, result: Dataset) -> None:
    """Copy the :data:`STUDY_LEVEL` attributes of ``source`` that ``result`` lacks."""
    for keyword in STUDY_LEVEL:
        if keyword in source and keyword not in result:
            result[keyword] = deepcopy(source[keyword])
