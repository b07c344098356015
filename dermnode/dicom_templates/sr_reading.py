"""Decode a dermnode TID 1500 SR back into :class:`~dermnode.contract.LesionAnalysis` (without mask)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
from pydicom import Dataset, dcmread
from pydicom.sr.codedict import codes as dcm_codes

from dermnode.contract import AnalysisStatus, LesionAnalysis, ModelIdentity
from dermnode.dicom_templates import codes
from dermnode.dicom_templates.image_conversion import SUPPORTED_SOP_CLASSES
from dermnode.dicom_templates.sr import MODEL_CONTRIBUTION, SECONDS_PARAMETER, VETO_THRESHOLD_PARAMETER


@dataclass
class ReadFinding:
    """One measurement group: the source image, the analysis, and what the SR states about it."""

    source_sop_instance_uid: str
    analysis: LesionAnalysis
    tracking_uid: str
    segment: tuple[str, int] | None = None  # (SEG SOP Instance UID, segment number)
    lesion_area: float | None = None
    lesion_area_unit: str | None = None
    outline: list[tuple[float, float]] | None = None  # closed polyline, (column, row) image coordinates
    long_axis: float | None = None
    short_axis: float | None = None
    axis_unit: str | None = None
    coded: dict[str, object] = field(default_factory=dict)  # top_class, veto, malignancy_probability, bcc_sk_call


def _key(concept) -> tuple[str, str]:
    return concept.scheme_designator, concept.value


def _item_key(item: Dataset) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return str(concept.CodingSchemeDesignator), str(concept.CodeValue)


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
    spacing = _image_library_spacing(ds)
    findings = []
    for group in report.get_planar_roi_measurement_groups():
        region = group.roi
        source = str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        finding = _read_group(group, models, spacing, source)
        finding.outline = [(float(x), float(y)) for x, y in region.value]
        findings.append(finding)
    for group in report.get_image_measurement_groups():
        findings.append(_read_group(group, models, spacing, _evidence_image(ds)))
    return findings


def _image_library_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) pixel spacing from the Image Library entry of the source (TID 1602)."""
    found: dict[tuple[str, str], float] = {}
    for library in ds.get("ContentSequence", []):
        if _item_key(library) != _key(dcm_codes.DCM.ImageLibrary):
            continue
        for group in library.get("ContentSequence", []):
            for entry in group.get("ContentSequence", []):
                for descriptor in entry.get("ContentSequence", []):
                    if descriptor.ValueType == "NUM":
                        found[_item_key(descriptor)] = hd.sr.NumContentItem.from_dataset(descriptor).value
    rows, columns = found.get(_key(codes.VERTICAL_PIXEL_SPACING)), found.get(_key(codes.HORIZONTAL_PIXEL_SPACING))
    return (float(rows), float(columns)) if rows is not None and columns is not None else None


def _evidence_image(ds: Dataset) -> str:
    """The one photographic image in the SR's evidence (dermnode writes one image per SR)."""
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.ReferencedSeriesSequence:
            for item in series.ReferencedSOPSequence:
                if item.ReferencedSOPClassUID in SUPPORTED_SOP_CLASSES:
                    return str(item.ReferencedSOPInstanceUID)
    raise ValueError("the SR references no photographic image in its evidence")


def _read_parameters(group, analysis: LesionAnalysis) -> None:
    """Veto threshold and stage times from the Algorithm Parameters of the group (sr.processing_parameters)."""
    for item in group[0].ContentSequence:
        if item.ValueType != "TEXT" or _item_key(item) != _key(codes.ALGORITHM_PARAMETERS):
            continue
        name, _, value = str(item.TextValue).partition("=")
        if name == VETO_THRESHOLD_PARAMETER:
            analysis.veto_threshold = float(value)
        elif name.startswith(SECONDS_PARAMETER):
            analysis.seconds[name.removeprefix(SECONDS_PARAMETER)] = float(value)


def _read_group(group, models, spacing, source: str) -> ReadFinding:
    analysis = LesionAnalysis(status=AnalysisStatus.FAILED, models=models, pixel_spacing_mm=spacing)
    finding = ReadFinding(source_sop_instance_uid=source, analysis=analysis, tracking_uid=str(group.tracking_uid))
    _read_parameters(group, analysis)
    for measurement in group.get_measurements():
        _read_measurement(measurement, finding)
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
        if item.ValueType == "TEXT" and _item_key(item) == _key(codes.FAILURE_REASON):
            analysis.failure_reason = str(item.TextValue)
    return finding


def _segment(measurement) -> tuple[str, int] | None:
    """The SEG segment a measurement was inferred from, if it names one."""
    for item in measurement[0].get("ContentSequence", []):
        if item.ValueType == "IMAGE" and _item_key(item) == _key(codes.SOURCE_OF_MEASUREMENT):
            reference = item.ReferencedSOPSequence[0]
            if "ReferencedSegmentNumber" in reference:
                return str(reference.ReferencedSOPInstanceUID), int(reference.ReferencedSegmentNumber)
    return None


def _unit(measurement) -> str:
    return {_key(codes.SQUARE_MILLIMETER): "mm2", _key(codes.MILLIMETER): "mm"}.get(_key(measurement.unit), "pixels")


def _read_measurement(measurement, finding: ReadFinding) -> None:
    analysis, key, value = finding.analysis, _key(measurement.name), float(measurement.value)
    feature = codes.radiomic_feature_name(key[0], key[1], measurement.name.meaning)
    if key in _BY_CODE["class_probability"]:
        analysis.probabilities[_BY_CODE["class_probability"][key]] = value
    elif key == _key(codes.PROBABILITY_OF_CANCER):
        finding.coded["malignancy_probability"] = value
    elif key == _key(codes.BCC_PROBABILITY):
        analysis.bcc_probability = value
    elif key == _key(codes.SEGMENTATION_CONFIDENCE):
        analysis.segmentation_confidence = value
    elif key == _key(codes.AREA):
        finding.lesion_area, finding.lesion_area_unit = value, _unit(measurement)
        finding.segment = _segment(measurement)
    elif key == _key(codes.LONG_AXIS):
        finding.long_axis, finding.axis_unit = value, _unit(measurement)
    elif key == _key(codes.SHORT_AXIS):
        finding.short_axis = value
    elif feature is not None:
        analysis.radiomics[feature] = value


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
        "long_axis": finding.long_axis,
        "short_axis": finding.short_axis,
        "axis_unit": finding.axis_unit,
        "outline": [list(point) for point in finding.outline] if finding.outline else None,
        "pixel_spacing_mm": list(a.pixel_spacing_mm) if a.pixel_spacing_mm else None,
        "radiomics": a.radiomics,
        "seconds": a.seconds,
        "models": [{"name": m.name, "version": m.version, "sha256": m.sha256} for m in a.models],
        "segment": {"seg_sop_instance_uid": finding.segment[0], "segment_number": finding.segment[1]} if finding.segment else None,
        "tracking_uid": finding.tracking_uid,
    }
