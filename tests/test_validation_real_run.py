"""The real models on dicomized ISIC images (`dermnode analyze`), then `dermnode validate --sr-dir` on its SRs.

The images come from the classifier's validation split (the BCC/SK model and the segmenter split
their own image sets, so some of these images trained them: the report's training overlap says which). The truth is keyed by accession number (the dicomized image id), as a hospital's pathology list
would be. Skipped until the starter weights of all models are in dermnode/models/starter/.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk
from typer.testing import CliRunner

from dermnode.cli import app
from dermnode.contract import CLASS_CODES, MALIGNANT_CODES
from dermnode.dicom_templates.image_conversion import dicomize_image
from dermnode.models.dataset_index import Split, load_records
from dermnode.models.model_card import STARTER_DIR, ModelCard
from peers import shared_data

PER_CLASS = 3  # 12 malignant and 12 benign: above the report's minimum count (10 and 10)


def test_validate_a_real_run_of_the_models(tmp_path: Path) -> None:
    data = shared_data()
    missing = [n for n in ("segmentation", "classifier", "bcc_sk") if not (STARTER_DIR / n / "model_card.json").is_file()]
    if missing:
        pytest.skip(f"no starter weights yet for {', '.join(missing)} (dermnode/models/starter/)")
    held_out = set(Split.load(STARTER_DIR / "classifier").validation_ids)  # not trained on by the classifier
    records = [r for r in load_records(data, "isic-8class") if r.diagnosis and r.image_id in held_out]
    chosen = [r for code in CLASS_CODES for r in [x for x in records if x.diagnosis == code][-PER_CLASS:]]
    images = tmp_path / "dicom"
    images.mkdir()
    with (tmp_path / "truth.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accession_number", "diagnosis"])
        for record in chosen:
            ds = dicomize_image(record.image_path, record.image_id, record.metadata)
            ds.save_as(images / f"{record.image_id}.dcm", enforce_file_format=True)
            writer.writerow([ds.AccessionNumber, record.diagnosis])
    env = {"DERMNODE_HOME": str(tmp_path / "home"), "DERMNODE_CONFIG": ""}
    runner = CliRunner()
    analysed = runner.invoke(app, ["analyze", str(images), "--out", str(tmp_path / "results")], env=env)
    assert analysed.exit_code == 0, analysed.output
    validated = runner.invoke(app, ["validate", "--truth", str(tmp_path / "truth.csv"), "--sr-dir",
                                    str(tmp_path / "results"), "--out", str(tmp_path / "report"),
                                    "--bootstrap", "100"], env=env)  # fmt: skip
    assert validated.exit_code == 0, validated.output

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["counts"]["cases"] + report["counts"]["excluded"] == len(chosen)
    assert report["counts"]["cases"] >= len(chosen) - 2, report["excluded"]
    rows = report["cases"]
    malignant = np.isin([r["truth"] for r in rows], MALIGNANT_CODES)
    malignancy = np.array([r["malignancy_probability"] for r in rows])
    assert report["discrimination"]["malignant"]["auroc"] == pytest.approx(sk.roc_auc_score(malignant, malignancy))
    veto = next(r for r in report["table2"]["rows"] if r["group"] == "malignant")["at_veto"]
    assert veto["sensitivity"] == pytest.approx(sk.recall_score(malignant, malignancy >= veto["threshold"]))
    assert veto["specificity"] == pytest.approx(sk.recall_score(~malignant, malignancy < veto["threshold"]))
    assert (tmp_path / "report" / "report.html").stat().st_size > 50_000
    classifier = next(m for m in report["models"]["models"] if m["name"] == "dermnode-fusion-classifier")
    assert classifier["sha256"] == ModelCard.load(STARTER_DIR / "classifier", verify=False).weights_sha256
    assert classifier["results"] == report["counts"]["cases"] and classifier["card"]["profile"] == "cpu"
    seen = report["training_overlap"]["by_model"][f"{classifier['name']} {classifier['version']}"]
    assert seen == {"train": 0, "validation": report["counts"]["cases"]}  # held out from training, not from validation
