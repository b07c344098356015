"""TID 1500 Measurement Report (Comprehensive 3D SR) of one analysed image.

One measurement group per image:

- analysed with a lesion mask: TID 1410 (Planar ROI) whose Image Region is the lesion outline (a
  closed SCOORD POLYLINE on the source image), with area, long and short axis, the diagnosis and
  the probabilities. The area is inferred from the outline and from the lesion segment of the SEG
  (segment number only, no frame number: the form that dciodvfy accepts);
- no lesion, or failed: TID 1501 (image-level) saying so in coded form, plus the failure reason.

Processing data (veto threshold, wall time per stage) are Algorithm Parameters of the dermnode
algorithm identification (TID 4019), not measurements. The pixel spacing, a property of the image,
is in the Image Library entry (TID 1602). docs/CONFORMANCE.md lists every item; :mod:`sr_reading`
decodes them.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.uid import generate_uid

from dermnode.contract import (
    BCC_SK_MODEL,
    CLASS_CODES,
    CLASSIFIER_MODEL,
    SEGMENTATION_MODEL,
    AnalysisStatus,
    LesionAnalysis,
    ModelIdentity,
)
from dermnode.dicom_templates import codes
from dermnode.dicom_templates.outline import lesion_axes, lesion_outline
from dermnode.dicom_templates.seg import LESION_SEGMENT_NUMBER, MANUFACTURER, software_version

ALGORITHM_NAME = "dermnode"
MODEL_CONTRIBUTION = "dermnode model"


def algorithm_uid() -> str:
    """A UID for this version of the dermnode algorithm (the SR's device observer)."""
    return generate_uid(entropy_srcs=[ALGORITHM_NAME, software_version()])


def _model(analysis: LesionAnalysis, name: str) -> ModelIdentity | None:
    return next((m for m in analysis.models if m.name == name), None)


def _algorithm(model: ModelIdentity | None) -> hd.sr.AlgorithmIdentification | None:
    if model is None:
        return None
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version, parameters=[f"sha256={model.sha256}"])


def _num(name, value: float, unit, model: ModelIdentity | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=_algorithm(model))


#: Tracking Identifier prefix by which @cornerstonejs/adapters (OHIF's SR hydration) recognise a
#: closed planar outline as a PlanarFreehandROI; the rest of the identifier names the lesion.
PLANAR_OUTLINE_TRACKING_PREFIX = "Cornerstone3DTools@^0.1.0:PlanarFreehandROI:"
#: Algorithm Parameters of the dermnode algorithm: "veto_threshold=0.3", "seconds.<stage>=0.51".
VETO_THRESHOLD_PARAMETER = "veto_threshold"
SECONDS_PARAMETER = "seconds."


def processing_parameters(analysis: LesionAnalysis) -> list[str]:
    """The veto threshold and the wall time of each stage, as ``name=value`` (exact float repr)."""
    return [f"{VETO_THRESHOLD_PARAMETER}={float(analysis.veto_threshold)!r}"] + [
        f"{SECONDS_PARAMETER}{stage}={float(seconds)!r}" for stage, seconds in analysis.seconds.items()
    ]


def _lesion_measurements(analysis: LesionAnalysis, seg: Dataset) -> list[hd.sr.Measurement]:
    """Area (inferred from the SEG segment), then long and short axis."""
    segmenter = _model(analysis, SEGMENTATION_MODEL)
    spacing = analysis.pixel_spacing_mm
    area = _num(codes.AREA, analysis.lesion_area, codes.SQUARE_MILLIMETER if spacing else codes.PIXELS, segmenter)
    segment_item = hd.sr.ImageContentItem(
        name=codes.SOURCE_OF_MEASUREMENT,
        referenced_sop_class_uid=seg.SOPClassUID,
        referenced_sop_instance_uid=seg.SOPInstanceUID,
        referenced_segment_numbers=LESION_SEGMENT_NUMBER,
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    area[0].ContentSequence = [*area[0].get("ContentSequence", []), segment_item]
    axes = lesion_axes(analysis.mask, spacing)
    length_unit = codes.MILLIMETER if spacing else codes.PIXELS
    return [area, _num(codes.LONG_AXIS, axes.long, length_unit, segmenter), _num(codes.SHORT_AXIS, axes.short, length_unit, segmenter)]


def _measurements(analysis: LesionAnalysis, planar: bool) -> list[hd.sr.Measurement]:
    """Probabilities, segmentation confidence and radiomics; the area too for a group without outline."""
    items = []
    classifier = _model(analysis, CLASSIFIER_MODEL)
    if analysis.probabilities:
        items += [
            _num(codes.CLASS_PROBABILITY_CODES[code], analysis.probabilities[code], codes.PROBABILITY_UNIT, classifier)
            for code in CLASS_CODES
        ]
        items.append(_num(codes.PROBABILITY_OF_CANCER, analysis.malignancy_probability, codes.PROBABILITY_UNIT, classifier))
    if analysis.bcc_probability is not None:
        items.append(_num(codes.BCC_PROBABILITY, analysis.bcc_probability, codes.PROBABILITY_UNIT, _model(analysis, BCC_SK_MODEL)))
    segmenter = _model(analysis, SEGMENTATION_MODEL)
    if analysis.segmentation_confidence is not None:
        items.append(_num(codes.SEGMENTATION_CONFIDENCE, analysis.segmentation_confidence, codes.PROBABILITY_UNIT, segmenter))
    if analysis.lesion_area is not None and not planar:
        unit = codes.SQUARE_MILLIMETER if analysis.pixel_spacing_mm else codes.PIXELS
        items.append(_num(codes.AREA, analysis.lesion_area, unit, segmenter))
    for name, value in analysis.radiomics.items():
        items.append(_num(codes.radiomic_feature_code(name), value, codes.PROBABILITY_UNIT))
    return items


def _evaluations(analysis: LesionAnalysis) -> list[hd.sr.QualitativeEvaluation]:
    items = [hd.sr.QualitativeEvaluation(codes.ANALYSIS_STATUS, codes.STATUS_CODES[AnalysisStatus(analysis.status).value])]
    if analysis.top_class is not None:
        items.append(hd.sr.QualitativeEvaluation(codes.MOST_LIKELY_DIAGNOSIS, codes.DIAGNOSIS_CODES[analysis.top_class]))
        items.append(hd.sr.QualitativeEvaluation(codes.MALIGNANCY_VETO, codes.YES if analysis.veto else codes.NO))
    if analysis.bcc_sk_call is not None:
        items.append(hd.sr.QualitativeEvaluation(codes.BCC_SK_CALL, codes.BCC_SK_CODES[analysis.bcc_sk_call]))
    return items


def _finding_sites(source: Dataset) -> list[hd.sr.FindingSite]:
    return [
        hd.sr.FindingSite(anatomic_location=hd.sr.CodedConcept(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning))
        for item in source.get("AnatomicRegionSequence", [])[:1]
    ]


def _infer_area_from_outline(group, outline: np.ndarray, source: Dataset) -> None:
    """Repeat the outline as INFERRED FROM of the Area: @cornerstonejs/adapters (OHIF's SR
    hydration) read a measurement's outline only from inside its first NUM. highdicom 0.28 refuses
    coordinates in TID 1419 measurements when building, so the item is added to the built group."""
    area = next(item for item in group[0].ContentSequence
                if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == codes.AREA.value)
    region = _region(outline, source)
    region.RelationshipType = hd.sr.RelationshipTypeValues.INFERRED_FROM.value
    area.ContentSequence.append(region)


def _region(outline: np.ndarray, source: Dataset) -> hd.sr.ImageRegion:
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=outline,
        source_image=hd.sr.SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID),
    )


def measurement_group(source: Dataset, analysis: LesionAnalysis, seg: Dataset | None):
    """The TID 1410 or TID 1501 group for one image (see the module docstring)."""
    lesion = f"dermnode lesion, series {source.get('SeriesNumber', '')} image {source.get('InstanceNumber', '')}"
    planar = seg is not None and analysis.mask is not None
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=(PLANAR_OUTLINE_TRACKING_PREFIX + lesion) if planar else lesion)
    algorithm = hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME, version=software_version(), parameters=processing_parameters(analysis)
    )
    common = dict(
        tracking_identifier=tracking,
        finding_type=codes.LESION,
        algorithm_id=algorithm,
        finding_sites=_finding_sites(source) or None,
        qualitative_evaluations=_evaluations(analysis),
    )
    if planar:
        outline = lesion_outline(analysis.mask)
        measurements = _lesion_measurements(analysis, seg) + _measurements(analysis, planar=True)
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=_region(outline, source), measurements=measurements, **common
        )
        _infer_area_from_outline(group, outline, source)
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(measurements=_measurements(analysis, planar=False), **common)
    if analysis.failure_reason:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.FAILURE_REASON,
                value=analysis.failure_reason[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


#: Source Modality -> CID 29 code for the Image Library entry descriptors.
_MODALITIES = {"DMS": dcm_codes.cid29.Dermoscopy, "XC": dcm_codes.cid29.ExternalCameraPhotography}


def image_library(source: Dataset, spacing: tuple[float, float] | None) -> hd.sr.ContainerContentItem:
    """TID 1600 Image Library with the source image, its modality and (row, column) pixel spacing
    (built here: highdicom 0.28's ImageLibrary does not know Dermoscopic Photography Image Storage)."""
    entry = hd.sr.ImageContentItem(
        name=hd.sr.CodedConcept("260753009", "SCT", "Source"),
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    descriptors = []
    modality = _MODALITIES.get(str(source.get("Modality", "")))
    if modality is not None:
        descriptors.append(hd.sr.CodeContentItem(
            name=dcm_codes.DCM.Modality, value=modality, relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
        ))
    if spacing is not None:  # TID 1602 rows: the spacing of the image that the mm values rest on
        for name, value in ((codes.HORIZONTAL_PIXEL_SPACING, spacing[1]), (codes.VERTICAL_PIXEL_SPACING, spacing[0])):
            descriptors.append(hd.sr.NumContentItem(
                name=name, value=float(value), unit=codes.MILLIMETER,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            ))
    if descriptors:
        entry.ContentSequence = descriptors
    group = hd.sr.ContainerContentItem(name=dcm_codes.DCM.ImageLibraryGroup, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    group.ContentSequence = [entry]
    library = hd.sr.ContainerContentItem(name=dcm_codes.DCM.ImageLibrary, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    library.ContentSequence = [group]
    return library


def contributing_equipment(analysis: LesionAnalysis) -> list[hd.ContributingEquipment]:
    """The dermnode algorithm, then one item per model (name, version, weights sha256)."""
    equipment = [
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=software_version(),
            device_serial_number=algorithm_uid(),
            contribution_description="dermnode AI analysis of dermoscopy images (not for diagnostic use)",
        )
    ]
    equipment += [
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=model.name,
            software_versions=model.version,
            device_serial_number=model.sha256,
            contribution_description=MODEL_CONTRIBUTION,
        )
        for model in analysis.models
    ]
    return equipment


def build_sr(
    source: Dataset,
    analysis: LesionAnalysis,
    seg: Dataset | None,
    *,
    series_number: int,
    for_diagnostic_use: bool = False,
) -> hd.sr.Comprehensive3DSR:
    """The Measurement Report for ``source``; ``seg`` is the lesion SEG (None without a mask)."""
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm_uid(),
            name=ALGORITHM_NAME,
            manufacturer_name=MANUFACTURER,
            model_name=f"{ALGORITHM_NAME} {software_version()}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.DERMOSCOPY_PROCEDURE,
        imaging_measurements=[measurement_group(source, analysis, seg)],
    )
    items = report[0].ContentSequence
    position = next(i for i, item in enumerate(items) if item.ValueType == "CONTAINER")  # Imaging Measurements
    items.insert(position, image_library(source, analysis.pixel_spacing_mm))
    evidence = [source] + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="dermnode AI results" + ("" if for_diagnostic_use else " (not for diagnostic use)"),
        contributing_equipment=contributing_equipment(analysis),
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = codes.PRIVATE_SCHEME
    scheme.CodingSchemeName = codes.PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = codes.PRIVATE_SCHEME_RESPONSIBLE
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
