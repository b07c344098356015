"""Key Object Selection document that flags a veto-positive image (with its SR and SEG) for attention.

CID 7010 has no "For Attention" title: the KOS uses "Of Interest" (DCM 113000) and says why in the
Key Object Description, so worklists can sort studies that carry a dermnode KOS first.
"""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from dermnode.contract import LesionAnalysis
from dermnode.dicom_templates import codes
from dermnode.dicom_templates.seg import MANUFACTURER
from dermnode.dicom_templates.sr import ALGORITHM_NAME, algorithm_uid

FLAG_PREFIX = "For attention: dermnode malignancy veto"


def description(analysis: LesionAnalysis) -> str:
    return (
        f"{FLAG_PREFIX} (probability of malignancy {analysis.malignancy_probability:.3f}"
        f" >= threshold {analysis.veto_threshold:.3f}). AI result, not for diagnostic use."
    )


def build_kos(
    source: Dataset, sr: Dataset, seg: Dataset | None, analysis: LesionAnalysis, *, series_number: int
) -> hd.ko.KeyObjectSelectionDocument:
    """A KOS referencing the image, the SR and the SEG (if any)."""
    referenced = [source, sr] + ([seg] if seg is not None else [])
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm_uid(), name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=codes.KOS_TITLE,
        referenced_objects=referenced,
        observer_device_context=observer,
        description=description(analysis),
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=referenced,
        content=content,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="dermnode: malignancy veto, for attention",
    )
