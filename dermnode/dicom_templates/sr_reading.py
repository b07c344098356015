"""Decode a dermnode TID 1500 SR back into :class:`~dermnode.contract.LesionAnalysis` (without mask)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
from pydicom import Dataset, dcmread

from dermnode.contract import AnalysisStatus, LesionAnalysis, ModelIdentity
from dermnode.dicom_templates import codes
from dermnode.dicom_templates.image_conversion import SUPPORTED_SOP_CLASSES
from dermnode.dicom_templates.sr import MODEL_CONTRIBUTION


@dataclass
class ReadFinding:
    """One measurement group: the source image, the analysis, and what the SR states about it."""

    source_sop_instance_uid: str
    analysis: LesionAnalysis
    tracking_uid: str
    segment: tuple[str, int] | None = None  # (SEG SOP Instance UID, segment number)
    lesion_area: float | None = None
    lesion_area_unit: str | None = None
    coded: dict[str, object] = field(default_factory=dict)  # top_class, veto, malignancy_probability, bcc_sk_call


def _key(concept) -> tuple[str, str]:
    return concept.scheme_designator, concept.value


_BY_CODE = {
    "class_probability": {(c.scheme_designator, c.value): k for k, c in codes.CLASS_PROBABILITY_CODES.items()},
    "diagnosis": {(c.scheme_designator, c.value): k for k, c in codes.DIAGNOSIS_CODES.items()},
    "bcc_sk": {(c.scheme_designator, c.value): k for k, c in codes.BCC_SK_CODES.items()},
    "status": {(c.scheme_designator, c.value): k for k, c in codes.STATUS_CODES.items()},
}


def read_sr(path_or_dataset: Path | str | Dataset) -> list[ReadFinding]:
    """Every measurement group of a dermnode SR, decoded."""
    ds = path_or_dataset if isinstance(path_or_dataset, Dataset) else dcmread(path_or_dataset)
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds, copy=False)
    report = sr.content
    models = tuple(
        ModelIdentity(str(item.ManufacturerModelName), str(item.SoftwareVersions), str(item.DeviceSerialNumber))
        for item in ds.get("ContributingEquipmentSequence", [])
        if item.get("ContributionDescription") == MODEL_CONTRIBUTION
    )
    findings = []
    for group in report.get_volumetric_roi_measurement_groups():
        findings.append(_read_group(group, models, _segment_reference(group)))
    for group in report.get_image_measurement_groups():
        findings.append(_read_group(group, models, None, source=_evidence_image(ds)))
    return findings


def _segment_reference(group) -> tuple[tuple[str, int], str]:
    items = group.referenced_segment
    segment = next(item for item in items if _key(item.ConceptNameCodeSequence[0]) == ("DCM", "121191"))
    source = next(item for item in items if _key(item.ConceptNameCodeSequence[0]) == ("DCM", "121233"))
    reference = segment.ReferencedSOPSequence[0]
    return (
        (str(reference.ReferencedSOPInstanceUID), int(reference.ReferencedSegmentNumber)),
        str(source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
    )


def _evidence_image(ds: Dataset) -> str:
    """The one photographic image in the SR's evidence (dermnode writes one image per SR)."""
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.ReferencedSeriesSequence:
            for item in series.ReferencedSOPSequence:
                if item.ReferencedSOPClassUID in SUPPORTED_SOP_CLASSES:
                    return str(item.ReferencedSOPInstanceUID)
    raise ValueError("the SR references no photographic image in its evidence")


def _read_group(group, models, segment_reference, source: str | None = None) -> ReadFinding:
    segment = None
    if segment_reference is not None:
        segment, source = segment_reference
    analysis = LesionAnalysis(status=AnalysisStatus.FAILED, models=models)
    finding = ReadFinding(source_sop_instance_uid=source, analysis=analysis, tracking_uid=str(group.tracking_uid), segment=segment)
    spacing: dict[str, float] = {}
    for measurement in group.get_measurements():
        _read_measurement(measurement, finding, spacing)
    if spacing:
        analysis.pixel_spacing_mm = (spacing["rows"], spacing["columns"])
    for evaluation in group.get_qualitative_evaluations():
        name, value = _key(evaluation.name), _key(evaluation.value)
        if name == _key(codes.ANALYSIS_STATUS):
            analysis.status = AnalysisStatus(_BY_CODE["status"][value])
        elif name == _key(codes.MOST_LIKELY_DIAGNOSIS):
            finding.coded["top_class"] = _BY_CODE["diagnosis"][value]
        elif name == _key(codes.MALIGNANCY_VETO):
            finding.coded["veto"] = value == _key(codes.YES)
        elif name == _key(codes.BCC_SK_CALL):
            finding.coded["bcc_sk_call"] = _BY_CODE["bcc_sk"][value]
    for item in group[0].ContentSequence:
        if item.ValueType == "TEXT" and _key(item.ConceptNameCodeSequence[0]) == _key(codes.FAILURE_REASON):
            analysis.failure_reason = str(item.TextValue)
    return finding


def _read_measurement(measurement, finding: ReadFinding, spacing: dict[str, float]) -> None:
    analysis, key, value = finding.analysis, _key(measurement.name), float(measurement.value)
    meaning = measurement.name.meaning
    feature = codes.radiomic_feature_name(key[0], key[1], meaning)
    if key in _BY_CODE["class_probability"]:
        analysis.probabilities[_BY_CODE["class_probability"][key]] = value
    elif key == _key(codes.VETO_THRESHOLD):
        analysis.veto_threshold = value
    elif key == _key(codes.PROBABILITY_OF_CANCER):
        finding.coded["malignancy_probability"] = value
    elif key == _key(codes.BCC_PROBABILITY):
        analysis.bcc_probability = value
    elif key == _key(codes.SEGMENTATION_CONFIDENCE):
        analysis.segmentation_confidence = value
    elif key == _key(codes.AREA):
        finding.lesion_area = value
        finding.lesion_area_unit = "mm2" if _key(measurement.unit) == _key(codes.SQUARE_MILLIMETER) else "pixels"
    elif key == _key(codes.VERTICAL_PIXEL_SPACING):
        spacing["rows"] = value
    elif key == _key(codes.HORIZONTAL_PIXEL_SPACING):
        spacing["columns"] = value
    elif feature is not None:
        analysis.radiomics[feature] = value
    elif key[0] == codes.PRIVATE_SCHEME and key[1].startswith(codes.STAGE_TIME_PREFIX):
        analysis.seconds[key[1].removeprefix(codes.STAGE_TIME_PREFIX)] = value


def finding_as_dict(finding: ReadFinding) -> dict:
    """Plain JSON-ready fields of a finding (for `dermnode report show`)."""
    a = finding.analysis
    return {
        "source_sop_instance_uid": finding.source_sop_instance_uid,
        "status": a.status.value,
        "failure_reason": a.failure_reason,
        "top_class": finding.coded.get("top_class"),
        "malignancy_probability": finding.coded.get("malignancy_probability"),
        "veto": finding.coded.get("veto"),
        "veto_threshold": a.veto_threshold,
        "probabilities": a.probabilities,
        "bcc_probability": a.bcc_probability,
        "bcc_sk_call": finding.coded.get("bcc_sk_call"),
        "segmentation_confidence": a.segmentation_confidence,
        "lesion_area": finding.lesion_area,
        "lesion_area_unit": finding.lesion_area_unit,
        "pixel_spacing_mm": list(a.pixel_spacing_mm) if a.pixel_spacing_mm else None,
        "radiomics": a.radiomics,
        "seconds": a.seconds,
        "models": [{"name": m.name, "version": m.version, "sha256": m.sha256} for m in a.models],
        "segment": {"seg_sop_instance_uid": finding.segment[0], "segment_number": finding.segment[1]} if finding.segment else None,
        "tracking_uid": finding.tracking_uid,
    }
