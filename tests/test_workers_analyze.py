"""`dermnode analyze` with the real starter models on ISIC images, a DICOM file and a broken file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.models.dataset_index import load_records
from dermnode.models.model_card import STARTER_DIR
from peers import assert_dciodvfy_clean, shared_data

MODELS = ("segmentation", "classifier", "bcc_sk")
KEYS = {"image", "probabilities", "top_class", "malignancy_probability", "veto", "bcc_probability", "mask",
        "models", "seconds"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], int, str]:
    """One `dermnode analyze --json` over 3 ISIC images (with --metadata), 1 DICOM file, 1 DICOM file with
    truncated pixel data and 1 broken JPEG file."""
    data = shared_data()
    missing = [name for name in MODELS if not (STARTER_DIR / name / "model_card.json").is_file()]
    if missing:
        pytest.skip(f"no starter weights yet for {', '.join(missing)}")
    from dermnode.dicom_templates.image_conversion import dicomize_image
    from dermnode.dicom_templates.dicomize import read_metadata_csv

    work = tmp_path_factory.mktemp("analyze")
    images = sorted((data / "isic-8class" / "images").glob("ISIC_*.jpg"))[:4]
    inputs = work / "inputs"
    inputs.mkdir()
    for image in images[:3]:
        shutil.copy(image, inputs / image.name)
    metadata = read_metadata_csv(data / "metadata.csv")
    dicom = work / "study.dcm"
    ds = dicomize_image(images[3], images[3].stem, metadata[images[3].stem])
    ds.save_as(dicom, enforce_file_format=True)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(work / "truncated.dcm", enforce_file_format=True)
    broken = inputs / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    out = work / "out"
    result = CliRunner().invoke(app, ["analyze", str(inputs), str(dicom), str(work / "truncated.dcm"), "--out", str(out), "--json",
                                      "--metadata", str(data / "metadata.csv")])
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return out, records, result.exit_code, result.output


def test_one_json_line_per_image_with_the_promised_keys(run) -> None:
    out, records, exit_code, output = run
    assert len(records) == 6, output
    for record in records:
        assert KEYS <= set(record), record
        assert set(record["models"]) and all({"version", "sha256"} <= set(v) for v in record["models"].values())
    good = [r for r in records if r["status"] != "failed"]
    assert len(good) == 4, output
    for record in good:
        if record["status"] == "analysed":
            assert set(record["probabilities"]) == {"NV", "MEL", "BCC", "BKL", "AK", "SCC", "DF", "VASC"}
            assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
            assert record["veto"] == (record["malignancy_probability"] >= 0.3)
            assert 0.0 <= record["bcc_probability"] <= 1.0
            assert Path(record["mask"]).is_file() and Path(record["mask"]).parent == out
        else:
            assert record["status"] == "no_lesion" and record["mask"] is None and record["probabilities"] == {}
        assert record["seconds"] > 0


def test_dicom_input_gets_seg_and_sr_clean_under_dciodvfy(run) -> None:
    out, records, _, _ = run
    (dicom,) = [r for r in records if r["image"].endswith("study.dcm")]
    assert dicom["status"] in ("analysed", "no_lesion")
    assert Path(dicom["sr"]).is_file()
    assert_dciodvfy_clean(Path(dicom["sr"]))
    if dicom["status"] == "analysed":
        assert_dciodvfy_clean(Path(dicom["seg"]))
    if dicom["veto"]:
        assert_dciodvfy_clean(Path(dicom["kos"]))


def test_broken_files_are_reported_and_the_others_go_on(run) -> None:
    _, records, exit_code, output = run
    (broken,) = [r for r in records if r["image"].endswith("broken.jpg")]
    assert broken["status"] == "failed" and "broken.jpg" in broken["failure_reason"]
    assert broken["mask"] is None and broken["probabilities"] == {}
    (truncated,) = [r for r in records if r["image"].endswith("truncated.dcm")]
    assert truncated["status"] == "failed" and "decoded" in truncated["failure_reason"]
    assert_dciodvfy_clean(Path(truncated["sr"]))  # the SR says the analysis failed
    assert "seg" not in truncated and "kos" not in truncated
    assert exit_code == 1 and "2 of 6 images could not be analysed" in output


def test_a_greyscale_copy_of_a_real_nevus_is_not_analysable(tmp_path) -> None:
    """A greyscale PNG of a nevus once came back MEL 0.94 with the veto on: now the gate refuses it."""
    from PIL import Image

    if not (STARTER_DIR / "classifier" / "model_card.json").is_file():
        pytest.skip("no starter weights yet")
    nevus = next(r for r in load_records(shared_data(), "ham10000") if r.diagnosis == "NV")
    grey = tmp_path / "grey.png"
    Image.open(nevus.image_path).convert("L").save(grey)
    result = CliRunner().invoke(app, ["analyze", str(grey), "--out", str(tmp_path / "out"), "--json"])
    (record,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert record["status"] == "not_analysable" and "greyscale" in record["failure_reason"], record
    assert record["probabilities"] == {} and record["veto"] is None and record["mask"] is None
    assert result.exit_code == 0 and "1 of 1 images are not analysable" in result.output
