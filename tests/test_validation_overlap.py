"""Training overlap: cases whose ISIC image was in a model's training or validation split are found,
counted per model and side, and the figures are given without them; mixed and unknown models warned of."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk

from dermnode.contract import CLASS_CODES, MALIGNANT_CODES, ModelIdentity
from dermnode.models.dataset_index import load_records, one_row_per_image, split_by_lesion
from dermnode.models.model_card import STARTER_DIR, ModelCard
from dermnode.node.settings import mask_url
from dermnode.validation.cli import summary_lines
from dermnode.validation.cohort import Case
from dermnode.validation.identity import find_cards
from dermnode.validation.minimum import MinimumCounts
from dermnode.validation.report import ReportOptions, build_report
from peers import shared_data

OPTIONS = ReportOptions(resamples=100, seed=3, minimum=MinimumCounts(5, 5))
CLASSIFIER = ModelCard.load(STARTER_DIR / "classifier", verify=False)


def cohort(train: list[str], validation: list[str], unseen: int, rng: np.random.Generator) -> list[Case]:
    """Cases keyed by SOP UID with the ISIC id as Patient ID (as dicomize writes it), analysed by the
    starter classifier; probabilities lean towards the truth."""
    image_ids = train + validation + [f"ISIC_99{i:05d}" for i in range(unseen)]  # ids no model card lists
    cases = []
    for i, image_id in enumerate(image_ids):
        truth = ("NV", "MEL")[i % 2]
        p_mel = float(np.clip(rng.normal(0.6 if truth == "MEL" else 0.25, 0.2), 0.01, 0.98))
        probabilities = {code: 0.0 for code in CLASS_CODES} | {"MEL": p_mel, "NV": 1 - p_mel}
        cases.append(Case(f"1.2.826.0.1.{i}", truth, probabilities, models=(CLASSIFIER.identity,),
                          ids={"sop_instance_uid": f"1.2.826.0.1.{i}", "patient_id": image_id}))  # fmt: skip
    return cases


def test_cases_from_the_training_split_are_found_and_left_out_of_the_clean_figures() -> None:
    train, validation = CLASSIFIER.split_ids["train"][:14], CLASSIFIER.split_ids["validation"][:6]
    cases = cohort(train, validation, unseen=30, rng=np.random.default_rng(0))
    cases.append(replace(cases[-1], key="no-id", ids={"patient_id": "P-000123"}))  # pseudonymised: cannot be checked
    report = build_report(cases, [], truth_rows=len(cases), options=OPTIONS, cards=find_cards([])).data

    overlap = report["training_overlap"]
    label = f"{CLASSIFIER.name} {CLASSIFIER.version}"
    assert overlap["by_model"] == {label: {"train": 14, "validation": 6}}
    assert (overlap["n_seen"], overlap["checked"], overlap["not_checked"]) == (20, 50, 1)
    assert set(overlap["seen"]) == {c.key for c in cases[:20]}
    assert overlap["seen"][cases[0].key] == [f"{label}: train"]
    assert overlap["seen"][cases[19].key] == [f"{label}: validation"]
    assert report["warnings"][0].startswith("TRAINING OVERLAP: 20 of 51 cases")
    assert any("1 of 51 cases carry no ISIC image id" in w for w in report["warnings"])

    unseen = cases[20:]
    y = np.array([c.truth in MALIGNANT_CODES for c in unseen])
    without = overlap["without_seen"]
    assert without["cases"] == 31
    assert without["discrimination"]["malignant"]["auroc"] == pytest.approx(
        sk.roc_auc_score(y, [c.malignancy_probability for c in unseen]))  # fmt: skip
    assert without["malignant_at_veto"]["sensitivity"] == pytest.approx(
        np.mean([c.veto for c in unseen if c.truth_malignant]))  # fmt: skip
    assert any("without the 20 cases seen in training (31 cases)" in line for line in summary_lines(report))


def test_unknown_and_mixed_model_versions_are_flagged() -> None:
    cases = cohort([], [], unseen=12, rng=np.random.default_rng(1))
    retrained = ModelIdentity(CLASSIFIER.name, "0.4.0", "ab" * 32)  # weights whose card is nowhere to be found
    cases = [replace(c, models=(retrained,)) if i % 3 == 0 else c for i, c in enumerate(cases)]
    report = build_report(cases, [], truth_rows=12, options=OPTIONS, cards=find_cards([])).data
    versions = [(m["version"], m["results"], m["card"] is not None) for m in report["models"]["models"]]
    assert sorted(versions) == sorted([(CLASSIFIER.version, 8, True), ("0.4.0", 4, False)])  # listed by name and version
    assert report["models"]["mixed"] == [CLASSIFIER.name]
    assert any(w.startswith(f"MIXED MODEL VERSIONS: {CLASSIFIER.name}") for w in report["warnings"])
    assert any("No model card found for dermnode-fusion-classifier 0.4.0" in w for w in report["warnings"])
    assert report["training_overlap"]["models_without_split_ids"] == ["dermnode-fusion-classifier 0.4.0"]
    assert report["cases"][0]["models"] == f"{CLASSIFIER.name} 0.4.0 {'ab' * 6}"


def test_a_card_in_the_models_folder_is_found_by_its_weights_hash(tmp_path: Path) -> None:
    card = replace(CLASSIFIER, version="0.9.0", weights_sha256="cd" * 32, split_ids={"train": ["ISIC_9900001"]})
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "model_card.json").write_text(json.dumps(asdict(card)))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_card.json").write_text("{not json")
    cards = find_cards([tmp_path])
    assert cards["cd" * 32].version == "0.9.0" and CLASSIFIER.weights_sha256 in cards


def test_the_starter_cards_ids_are_the_seeded_split_of_the_data() -> None:
    """The classifier's and the BCC/SK model's split_ids regenerate from split_by_lesion with the card's seed."""
    records = load_records(shared_data())
    labelled = one_row_per_image([r for r in records if r.diagnosis is not None])
    assert "seed 20261203" in CLASSIFIER.split
    split = split_by_lesion(records=labelled, seed=20261203)
    assert CLASSIFIER.split_ids == split.card_ids()
    bcc_sk = ModelCard.load(STARTER_DIR / "bcc_sk", verify=False)
    pair = one_row_per_image([r for r in records if r.diagnosis in ("BCC", "BKL")])
    assert bcc_sk.split_ids == split_by_lesion(records=pair, seed=20261203).card_ids()
    assert f"({len(bcc_sk.split_ids['train'])} train / {len(bcc_sk.split_ids['validation'])} validation" in bcc_sk.split


def test_database_urls_are_printed_without_secrets() -> None:
    assert mask_url("postgresql://node:s3cret@db.example:5432/dermnode") == (
        "postgresql://node:***@db.example:5432/dermnode")  # fmt: skip
    shown = mask_url("postgresql://db/dermnode?sslmode=require&sslpassword=hunter2&api_token=t0k")
    assert "hunter2" not in shown and "t0k" not in shown and "sslmode=require" in shown
