"""The results read the way viewers read them.

- tests/viewer_check/check.mjs loads our SEG with @cornerstonejs/adapters 5.6.8 (dcmjs 0.52.0,
  what OHIF 3.13 ships) and with dcmjs 0.29's Cornerstone adapter, and our SR with the adapters'
  MeasurementReport: the labelmaps must equal the mask pixel for pixel, and the SR must give a
  closed planar outline on the source image. A SEG without plane geometry (what dermnode wrote
  before) must still fail there, so the check can fail.
- dcentvfy: the image, SEG, SR and KOS describe one patient and one study.

The Node packages are pinned in tests/viewer_check/package-lock.json; `.ci/run` installs them.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import dicomize_image
from dermnode.dicom_templates.results import ResultSet, build_results
from dermnode.dicom_templates.sr_reading import read_sr
from peers import assert_dciodvfy_clean, shared_data, tool
from test_templates_image_conversion import lesion_image, vl_photographic_image
from test_templates_results import ISIC_ID, analysed, probabilities

CHECKER = Path(__file__).parent / "viewer_check"


def node_checker() -> str:
    node = tool("node")
    if not (CHECKER / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.skip(f"the viewer loaders are not installed: run `npm ci --prefix {CHECKER}` (.ci/run does)")
    return node


def check(image: Path, seg: Path | None, sr: Path | None) -> dict:
    """Run check.mjs; its JSON report."""
    args = [node_checker(), str(CHECKER / "check.mjs"), str(image), str(seg or ""), str(sr or "")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=CHECKER)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def labelmap(found: dict, shape: tuple[int, int]) -> np.ndarray:
    assert "error" not in found, found
    return np.frombuffer(base64.b64decode(found["labelmap"]), np.uint8).reshape(shape).astype(bool)


@pytest.fixture(params=["isic-dms", "vl-photo-odd-width"])
def written(request, tmp_path) -> tuple[dict[str, Path], np.ndarray, ResultSet]:
    """Image, SEG, SR and KOS files of a veto-positive analysis, the mask, and the result set."""
    if request.param == "isic-dms":
        task1 = shared_data() / "isic2018-task1"
        image_file, mask_file = task1 / "images" / f"{ISIC_ID}.jpg", task1 / "masks" / f"{ISIC_ID}_segmentation.png"
        if not image_file.is_file() or not mask_file.is_file():
            pytest.skip(f"{image_file} or its mask is missing")
        source = dicomize_image(image_file, ISIC_ID, PatientMetadata(age=30, sex="female", anatomic_site="posterior torso"))
        source.save_as(tmp_path / "image.dcm", enforce_file_format=True)
        mask = np.asarray(Image.open(mask_file)) > 127
    else:  # 181 columns: a row of the 1-bit SEG frame does not end on a byte boundary
        (tmp_path / "image.dcm").write_bytes(vl_photographic_image(tmp_path, lesion_image(150, 181)).read_bytes())
        mask = np.asarray(pydicom.dcmread(tmp_path / "image.dcm").pixel_array)[..., 0] < 128
    source = pydicom.dcmread(tmp_path / "image.dcm")
    results = build_results(source, analysed(source, mask, probabilities(MEL=0.5)))
    paths = {"image": tmp_path / "image.dcm"}
    for kind in ("seg", "sr", "kos"):
        paths[kind] = tmp_path / f"{kind}.dcm"
        getattr(results, kind).save_as(paths[kind], enforce_file_format=True)
        assert_dciodvfy_clean(paths[kind])
    return paths, mask, results


def test_ohif_loaders_read_the_seg_and_the_sr_outline(written):
    paths, mask, _ = written
    report = check(paths["image"], paths["seg"], paths["sr"])

    for loader in ("cornerstone3D", "legacyDcmjs"):
        found = report["seg"][loader]
        assert np.array_equal(labelmap(found, mask.shape), mask), loader
        assert found["segments"] == [1] and found["labels"] == [0, 1], loader

    (finding,) = read_sr(paths["sr"])
    measurements = report["sr"]["cornerstone3D"]["measurements"]
    assert len(measurements) >= 1, report["sr"]
    (outline,) = [m for m in measurements if m["toolType"] == "PlanarFreehandROI"]
    assert outline["closed"] is True and outline["finding"] == "Lesion"
    source_uid = pydicom.dcmread(paths["image"]).SOPInstanceUID
    assert outline["referencedSOPInstanceUID"] == finding.source_sop_instance_uid == source_uid
    # the adapter drops the repeated closing point and maps image -> world -> image without loss
    assert np.allclose(outline["outline"], np.array(finding.outline)[:-1], atol=1e-6)
    assert outline["area"] == pytest.approx(finding.lesion_area)


def test_a_seg_without_plane_geometry_is_refused_by_both_loaders(written, tmp_path):
    paths, _, _ = written
    seg = pydicom.dcmread(paths["seg"])
    del seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    del seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence
    seg.save_as(tmp_path / "flat-seg.dcm")
    report = check(paths["image"], tmp_path / "flat-seg.dcm", None)
    assert "ImageOrientationPatient" in report["seg"]["cornerstone3D"]["error"]
    assert "ImageOrientationPatient" in report["seg"]["legacyDcmjs"]["error"]


def test_image_and_results_describe_one_study(written):
    """dcentvfy finds nothing but the AccessionNumber IE note, which comes from dicom3tools' own
    module tables (General Study in the image's IOD, General Series ... in others)."""
    paths, _, results = written
    assert results.kos is not None
    run = subprocess.run([tool("dcentvfy"), *(str(paths[k]) for k in ("image", "seg", "sr", "kos"))],
                         capture_output=True, text=True)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    unexplained = [line for line in lines
                   if not ("Different information entities" in line and "<AccessionNumber>" in line)]
    assert not unexplained, "\n".join(lines)
    image = pydicom.dcmread(paths["image"])
    for kind in ("seg", "sr", "kos"):
        result = pydicom.dcmread(paths[kind])
        for keyword in ("PatientAge", "StudyDescription", "PatientSex", "StudyInstanceUID", "AccessionNumber"):
            if keyword in image:
                assert result.get(keyword) == image.get(keyword), (kind, keyword)
