"""SEG, SR and KOS for a dicomized ISIC image and for a VL Photographic image.

Each case checks the coded content (not only that a file exists), that dciodvfy finds no error,
that highdicom reads the objects back, that the SR's segment reference resolves to the SEG written,
and that SR encode -> decode is lossless. One test C-STOREs the objects to Orthanc.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from skimage.draw import polygon
from pydicom.uid import (
    Comprehensive3DSRStorage,
    DermoscopicPhotographyImageStorage,
    KeyObjectSelectionDocumentStorage,
    SegmentationStorage,
)

from dermnode.contract import (
    BCC_SK_MODEL,
    CLASS_CODES,
    CLASSIFIER_MODEL,
    SEGMENTATION_MODEL,
    AnalysisStatus,
    LesionAnalysis,
    ModelIdentity,
    PatientMetadata,
)
from dermnode.dicom_templates import codes
from dermnode.dicom_templates.image_conversion import dicomize_image, pixel_spacing_mm
from dermnode.dicom_templates.outline import MAX_OUTLINE_POINTS, lesion_axes, lesion_outline
from dermnode.dicom_templates.results import ResultSet, build_results
from dermnode.dicom_templates.seg import read_mask
from dermnode.dicom_templates.sr_reading import ReadFinding, read_sr
from peers import assert_dciodvfy_clean, orthanc, shared_data, tool
from test_templates_image_conversion import vl_photographic_image

ISIC_ID = "ISIC_0000019"
MODELS = (
    ModelIdentity(SEGMENTATION_MODEL, "1.0.0", "1" * 64),
    ModelIdentity(CLASSIFIER_MODEL, "2.1.0", "2" * 64),
    ModelIdentity(BCC_SK_MODEL, "0.3.0", "3" * 64),
)
#: Warnings dciodvfy may leave, all explained in docs/CONFORMANCE.md.
EXPLAINED_WARNINGS = ("<99DERMNODE>",)


# -------------------------------------------------------------------------------------- the sources


@pytest.fixture(params=["isic-dms", "vl-photo"])
def case(request, tmp_path) -> tuple[pydicom.Dataset, np.ndarray]:
    """(source dataset as read from its file, lesion mask at the source's size)."""
    if request.param == "isic-dms":
        task1 = shared_data() / "isic2018-task1"
        image, mask_file = task1 / "images" / f"{ISIC_ID}.jpg", task1 / "masks" / f"{ISIC_ID}_segmentation.png"
        if not image.is_file() or not mask_file.is_file():
            pytest.skip(f"{image} or its mask is missing")
        ds = dicomize_image(image, ISIC_ID, PatientMetadata(age=30, sex="female", anatomic_site="posterior torso"))
        ds.save_as(tmp_path / "source.dcm", enforce_file_format=True)
        mask = np.asarray(Image.open(mask_file)) > 127
    else:
        path = vl_photographic_image(tmp_path)
        source = pydicom.dcmread(path)
        mask = np.asarray(source.pixel_array)[..., 0] < 128  # the drawn ellipse
        (tmp_path / "source.dcm").write_bytes(path.read_bytes())
    source = pydicom.dcmread(tmp_path / "source.dcm")
    assert mask.shape == (source.Rows, source.Columns) and mask.any()
    return source, mask


def analysed(source, mask, probabilities: dict[str, float], bcc: float = 0.81) -> LesionAnalysis:
    return LesionAnalysis(
        status=AnalysisStatus.ANALYSED,
        veto_threshold=0.3,
        mask=mask,
        segmentation_confidence=0.9371234567,
        probabilities=probabilities,
        bcc_probability=bcc,
        radiomics={
            "original_glcm_Contrast": 12.345678901234,  # IBSI-coded
            "original_firstorder_Entropy": 3.0000001,  # IBSI-coded
            "original_firstorder_Mean": 101.25,  # private
            "original_shape2D_Elongation": 0.81234,  # private
        },
        pixel_spacing_mm=pixel_spacing_mm(source),
        models=MODELS,
        seconds={"segmentation": 0.51, "radiomics": 0.2, "classifier": 0.123456789, "bcc_sk": 0.7},
    )


def probabilities(**high: float) -> dict[str, float]:
    rest = (1 - sum(high.values())) / (len(CLASS_CODES) - len(high))
    return {code: high.get(code, rest) for code in CLASS_CODES}


def written(results: ResultSet, tmp_path: Path) -> dict[str, Path]:
    """Write each object, check it with dciodvfy, and return the paths by kind."""
    paths = {}
    for kind in ("seg", "sr", "kos"):
        ds = getattr(results, kind)
        if ds is None:
            continue
        paths[kind] = tmp_path / f"{kind}.dcm"
        ds.save_as(paths[kind], enforce_file_format=True)
        verdict = assert_dciodvfy_clean(paths[kind])
        unexplained = [w for w in verdict.warnings if not any(e in w for e in EXPLAINED_WARNINGS)]
        assert not unexplained, f"{kind}: {unexplained}"
    return paths


def assert_lossless(finding: ReadFinding, analysis: LesionAnalysis, source) -> None:
    got = finding.analysis
    assert finding.source_sop_instance_uid == source.SOPInstanceUID
    for name in ("status", "veto_threshold", "segmentation_confidence", "probabilities", "bcc_probability",
                 "radiomics", "pixel_spacing_mm", "models", "seconds", "failure_reason"):
        assert getattr(got, name) == getattr(analysis, name), name
    assert got.mask is None
    if analysis.mask is not None:
        axes = lesion_axes(analysis.mask, analysis.pixel_spacing_mm)
        assert (finding.long_axis, finding.short_axis) == (axes.long, axes.short)
        assert finding.axis_unit == ("mm" if analysis.pixel_spacing_mm else "pixels")
        assert np.array_equal(np.array(finding.outline), lesion_outline(analysis.mask))
    else:
        assert finding.outline is None and finding.long_axis is None
    assert finding.lesion_area == analysis.lesion_area and finding.lesion_area_unit == (
        analysis.lesion_area_unit if analysis.lesion_area is not None else None
    )
    expected = {"top_class": analysis.top_class, "veto": analysis.veto, "bcc_sk_call": analysis.bcc_sk_call,
                "malignancy_probability": analysis.malignancy_probability}
    assert finding.coded == {k: v for k, v in expected.items() if v is not None}


def assert_planar_group(group, mask: np.ndarray, source, seg) -> None:
    """TID 1410: the outline is a closed polyline on the source image that follows the mask's border;
    the area is inferred from segment 1 of the SEG (no frame number: the clean form) and from the
    same outline; long and short axis are standard concepts."""
    region = group.roi
    assert region.GraphicType == "POLYLINE" and 8 <= len(region.value) <= MAX_OUTLINE_POINTS + 1
    assert np.array_equal(region.value[0], region.value[-1])  # closed
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    filled = np.zeros_like(mask)  # pixels whose centre lies inside the outline
    filled[polygon(region.value[:, 1] - 0.5, region.value[:, 0] - 0.5, mask.shape)] = True
    assert (filled & mask).sum() / (filled | mask).sum() > 0.95  # the outline follows the lesion
    (area,) = group.get_measurements(name=codes.AREA)
    references = {(i.ValueType, i.ConceptNameCodeSequence[0].CodeValue): i for i in area[0].ContentSequence}
    segment = references[("IMAGE", codes.SOURCE_OF_MEASUREMENT.value)].ReferencedSOPSequence[0]
    assert segment.ReferencedSOPInstanceUID == seg.SOPInstanceUID and segment.ReferencedSegmentNumber == 1
    assert "ReferencedFrameNumber" not in segment and 1 in seg.get_segment_numbers()
    assert np.array_equal(references[("SCOORD", codes.IMAGE_REGION.value)].GraphicData, region.GraphicData)
    (long_axis,) = group.get_measurements(name=codes.LONG_AXIS)
    (short_axis,) = group.get_measurements(name=codes.SHORT_AXIS)
    assert 0 < short_axis.value <= long_axis.value
    assert {key(m.name) for m in group.get_measurements()}.isdisjoint({("99DERMNODE", "VETO-T")})


def evaluations(sr_path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """Qualitative evaluations of the SR's only group, as (scheme, value) -> (scheme, value)."""
    report = hd.sr.srread(sr_path).content
    groups = report.get_planar_roi_measurement_groups() + report.get_image_measurement_groups()
    assert len(groups) == 1
    return {(e.name.scheme_designator, e.name.value): (e.value.scheme_designator, e.value.value)
            for e in groups[0].get_qualitative_evaluations()}


def key(code) -> tuple[str, str]:
    return code.scheme_designator, code.value


# ------------------------------------------------------------------------------------------- cases


def test_veto_positive_writes_seg_sr_and_kos(case, tmp_path):
    source, mask = case
    analysis = analysed(source, mask, probabilities(MEL=0.35, NV=0.4))  # top class NV, but veto fires
    assert analysis.top_class == "NV" and analysis.veto
    results = build_results(source, analysis)
    assert [ds.SOPClassUID for ds in results.datasets()] == [
        SegmentationStorage, Comprehensive3DSRStorage, KeyObjectSelectionDocumentStorage]
    paths = written(results, tmp_path)

    seg = hd.seg.segread(paths["seg"])
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 1
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    assert seg.get_source_image_uids()[0][2] == source.SOPInstanceUID
    description = seg.get_segment_description(1)
    assert key(description.segmented_property_type) == key(codes.LESION)
    assert description.SegmentAlgorithmType == "AUTOMATIC"
    assert description.algorithm_identification[0].AlgorithmName == "dermnode-lesion-segmentation"
    assert description.algorithm_identification[0].AlgorithmVersion == "1.0.0"
    assert seg.ContentQualification == "RESEARCH" and "dermnode" in seg.SeriesDescription
    assert np.array_equal(read_mask(pydicom.dcmread(paths["seg"])), mask)

    (finding,) = read_sr(paths["sr"])
    assert finding.segment == (results.seg.SOPInstanceUID, 1)  # resolves to the SEG written
    (group,) = hd.sr.srread(paths["sr"]).content.get_planar_roi_measurement_groups()  # TID 1410
    assert_planar_group(group, mask, source, seg)
    assert_lossless(finding, analysis, source)
    found = evaluations(paths["sr"])
    assert found[key(codes.MALIGNANCY_VETO)] == key(codes.YES)
    assert found[key(codes.MOST_LIKELY_DIAGNOSIS)] == key(codes.DIAGNOSIS_CODES["NV"])
    assert found[key(codes.BCC_SK_CALL)] == key(codes.BCC_SK_CODES["BCC"])
    assert found[key(codes.ANALYSIS_STATUS)] == key(codes.STATUS_CODES["analysed"])
    sr = pydicom.dcmread(paths["sr"])
    equipment = [(i.get("ManufacturerModelName"), i.get("ContributionDescription", "")) for i in sr.ContributingEquipmentSequence]
    assert ("dermnode", "dermnode AI analysis of dermoscopy images (not for diagnostic use)") in equipment
    assert [name for name, why in equipment if why == "dermnode model"] == [m.name for m in MODELS]
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == codes.PRIVATE_SCHEME
    procedure = sr.ContentSequence  # TID 1500: procedure reported is dermoscopy
    assert any(item.get("ConceptCodeSequence", [None])[0] and item.ConceptCodeSequence[0].CodeValue == "446078004"
               for item in procedure)

    kos = pydicom.dcmread(paths["kos"])
    assert kos.ConceptNameCodeSequence[0].CodeValue == codes.KOS_TITLE.value
    referenced = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for item in kos.ContentSequence if item.ValueType in ("IMAGE", "COMPOSITE")}
    assert referenced == {source.SOPInstanceUID, results.sr.SOPInstanceUID, results.seg.SOPInstanceUID}
    assert any("malignancy veto" in str(item.get("TextValue", "")) for item in kos.ContentSequence)


def test_veto_negative_has_no_kos_and_says_no(case, tmp_path):
    source, mask = case
    analysis = analysed(source, mask, probabilities(NV=0.75, MEL=0.05, BCC=0.05, AK=0.05, SCC=0.05), bcc=0.2)
    assert analysis.veto is False
    results = build_results(source, analysis)
    assert results.kos is None and results.seg is not None
    paths = written(results, tmp_path)
    found = evaluations(paths["sr"])
    assert found[key(codes.MALIGNANCY_VETO)] == key(codes.NO)
    assert found[key(codes.BCC_SK_CALL)] == key(codes.BCC_SK_CODES["SK"])
    assert_lossless(read_sr(paths["sr"])[0], analysis, source)


def test_kos_setting_off_and_diagnostic_use(case, tmp_path):
    source, mask = case
    analysis = analysed(source, mask, probabilities(MEL=0.9))
    results = build_results(source, analysis, kos_enabled=False, for_diagnostic_use=True)
    assert results.kos is None and analysis.veto
    assert "ContentQualification" not in results.seg
    assert "not for diagnostic use" not in results.sr.SeriesDescription


def test_no_lesion_is_stated_in_coded_form(case, tmp_path):
    source, _ = case
    analysis = LesionAnalysis(status=AnalysisStatus.NO_LESION, segmentation_confidence=0.02, models=MODELS,
                              seconds={"segmentation": 0.4})
    results = build_results(source, analysis)
    assert results.seg is None and results.kos is None
    paths = written(results, tmp_path)
    found = evaluations(paths["sr"])
    assert found == {key(codes.ANALYSIS_STATUS): key(codes.STATUS_CODES["no_lesion"])}
    (finding,) = read_sr(paths["sr"])
    assert finding.segment is None
    assert_lossless(finding, analysis, source)


def test_failed_analysis_is_stated_with_its_reason(case, tmp_path):
    source, _ = case
    analysis = LesionAnalysis(status=AnalysisStatus.FAILED, failure_reason="classifier: CUDA out of memory",
                              models=MODELS[:1], veto_threshold=0.25)
    paths = written(build_results(source, analysis), tmp_path)
    found = evaluations(paths["sr"])
    assert found == {key(codes.ANALYSIS_STATUS): key(codes.STATUS_CODES["failed"])}
    (finding,) = read_sr(paths["sr"])
    assert finding.analysis.failure_reason == "classifier: CUDA out of memory"
    assert_lossless(finding, analysis, source)


def test_not_analysable_image_is_stated_with_its_reason_and_no_finding(case, tmp_path):
    source, _ = case
    reason = "not analysable: greyscale image (dermoscopy is a colour photograph)"
    analysis = LesionAnalysis(status=AnalysisStatus.NOT_ANALYSABLE, failure_reason=reason, models=MODELS[:1])
    results = build_results(source, analysis)
    assert results.seg is None and results.kos is None
    paths = written(results, tmp_path)
    assert evaluations(paths["sr"]) == {key(codes.ANALYSIS_STATUS): key(codes.STATUS_CODES["not_analysable"])}
    (finding,) = read_sr(paths["sr"])
    assert finding.analysis.status is AnalysisStatus.NOT_ANALYSABLE and finding.analysis.failure_reason == reason
    assert_lossless(finding, analysis, source)


def test_report_show_prints_the_finding(case, tmp_path):
    import json

    from typer.testing import CliRunner

    from dermnode.cli import app

    source, mask = case
    analysis = analysed(source, mask, probabilities(BCC=0.6))
    paths = written(build_results(source, analysis), tmp_path)
    result = CliRunner().invoke(app, ["report", "show", str(paths["sr"]), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["top_class"] == "BCC" and row["veto"] is True and row["probabilities"] == analysis.probabilities
    table = CliRunner().invoke(app, ["report", "show", str(paths["sr"])])
    assert table.exit_code == 0 and "malignancy_probability" in table.output


# ------------------------------------------------------------------------------------------ Orthanc


def test_orthanc_accepts_seg_sr_and_kos(tmp_path):
    from pynetdicom import AE

    tool("Orthanc")
    image = shared_data() / "isic2018-task1" / "images" / f"{ISIC_ID}.jpg"
    mask_file = shared_data() / "isic2018-task1" / "masks" / f"{ISIC_ID}_segmentation.png"
    if not image.is_file():
        pytest.skip(f"{image} is missing")
    source = dicomize_image(image, ISIC_ID, PatientMetadata(age=30, sex="female", anatomic_site="posterior torso"))
    mask = np.asarray(Image.open(mask_file)) > 127
    results = build_results(source, analysed(source, mask, probabilities(MEL=0.5)))
    objects = [source, *results.datasets()]
    with orthanc(tmp_path / "orthanc") as pacs:
        ae = AE(ae_title="DERMNODE")
        for ds in objects:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        association = ae.associate("127.0.0.1", pacs.dicom_port, ae_title=pacs.aet)
        assert association.is_established
        try:
            statuses = [association.send_c_store(ds).Status for ds in objects]
        finally:
            association.release()
        assert statuses == [0, 0, 0, 0]
        assert sorted(pacs.sop_classes()) == sorted(
            [DermoscopicPhotographyImageStorage, SegmentationStorage, Comprehensive3DSRStorage,
             KeyObjectSelectionDocumentStorage])
        stored = {pacs.tag(iid, "0008,0018") for iid in pacs.get("/instances")}
        assert stored == {ds.SOPInstanceUID for ds in objects}
