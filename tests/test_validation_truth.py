"""The truth CSV and its join with the node's recorded outputs: every unusable row gets a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermnode.contract import CLASS_CODES
from dermnode.validation.cohort import RecordedOutput, join, output_from_audit_row
from dermnode.validation.truth import TruthFileError, normalise_label, read_truth

UNIFORM = {code: 1 / len(CLASS_CODES) for code in CLASS_CODES}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def output(sop: str, study: str = "", status: str = "analysed", at: str = "2026-01-01T00:00:00", **kw) -> RecordedOutput:
    return RecordedOutput(
        study_uid=study or f"study-{sop}", sop_instance_uid=sop, accession_number=f"acc-{sop}", status=status,
        probabilities=dict(UNIFORM) if status == "analysed" else {}, recorded_at=at, **kw,
    )  # fmt: skip


def test_labels_accept_codes_names_and_binary() -> None:
    assert normalise_label("mel") == "MEL"
    assert normalise_label(" Basal  cell carcinoma ") == "BCC"
    assert normalise_label("seborrheic_keratosis") == "BKL"
    assert normalise_label("Malignant") == "malignant"
    assert normalise_label("lentigo maligna") is None
    assert normalise_label("") is None


def test_read_truth_keeps_good_rows_and_gives_reasons(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "truth.csv",
        "study_uid,diagnosis,mask,age,sex\n"
        "1.1,MEL,masks/a.png,045Y,F\n"
        "1.2,wart,,,\n"
        ",NV,,,\n"
        "1.3,benign,/abs/m.png,70,male\n"
        "1.4,NV,,,\n"
        "1.4,NV,,,\n"
        "1.5,NV,,,\n"
        "1.5,MEL,,,\n"
        "1.6,,,,\n",
    )
    truth = read_truth(csv_path)
    assert truth.key_column == "study_uid"
    assert [(r.key, r.label) for r in truth.rows] == [("1.1", "MEL"), ("1.3", "benign"), ("1.4", "NV")]
    first = truth.rows[0]
    assert first.mask_path == tmp_path / "masks" / "a.png" and first.age == 45 and first.sex == "female"
    assert truth.rows[1].mask_path == Path("/abs/m.png") and truth.rows[1].sex == "male"
    reasons = {(e.row, e.reason) for e in truth.excluded}
    assert reasons == {
        (2, "unknown diagnosis 'wart'"),
        (3, "empty study_uid"),
        (6, "duplicate of row 5"),
        (7, "listed again with a different diagnosis"),
        (8, "listed again with a different diagnosis"),
        (9, "no diagnosis"),
    }


def test_key_column_preference_and_file_errors(tmp_path: Path) -> None:
    both = write(tmp_path / "both.csv", "accession_number,sop_instance_uid,diagnosis\nA1,1.2.3,NV\n")
    assert read_truth(both).key_column == "sop_instance_uid"
    with pytest.raises(TruthFileError, match="no key column"):
        read_truth(write(tmp_path / "nokey.csv", "image,diagnosis\nx,NV\n"))
    with pytest.raises(TruthFileError, match="no 'diagnosis' column"):
        read_truth(write(tmp_path / "nodx.csv", "study_uid,label\n1,NV\n"))
    with pytest.raises(TruthFileError, match="does not exist"):
        read_truth(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes("study_uid,diagnosis\n1,n\xe6vus\n".encode("latin-1"))
    with pytest.raises(TruthFileError, match="not a readable UTF-8 CSV"):
        read_truth(tmp_path / "latin1.csv")


def test_join_pairs_outputs_and_explains_the_rest(tmp_path: Path) -> None:
    truth = read_truth(
        write(tmp_path / "t.csv", "study_uid,diagnosis\nS1,MEL\nS2,NV\nS3,BCC\nS4,NV\nS5,AK\n")
    )
    outputs = [
        output("a", "S1", at="2026-01-01T00:00:00"),
        output("a", "S1", status="failed", at="2025-12-01T00:00:00"),  # older analysis of the same image
        output("b", "S2", status="failed", failure_reason="pixel data cannot be decoded"),
        output("c1", "S3"),
        output("c2", "S3"),  # two images in one study: ambiguous for a study-level diagnosis
        output("e", "S5", status="analysed"),
        output("z", "S9"),  # no truth
    ]
    outputs[5].probabilities.pop("VASC")
    cases, excluded, unmatched = join(truth, outputs)
    assert [(c.key, c.truth, c.ids["sop_instance_uid"]) for c in cases] == [("S1", "MEL", "a")]
    reasons = {e.key: e.reason for e in excluded}
    assert reasons["S2"] == "the node did not analyse the image (status failed: pixel data cannot be decoded)"
    assert reasons["S3"].startswith("this study_uid matches 2 analysed images")
    assert reasons["S4"] == "no recorded output with this study_uid"
    assert reasons["S5"] == "recorded output lacks P(VASC)"
    assert unmatched == 1


def test_join_prefers_the_nodes_metadata_and_falls_back_to_the_truth(tmp_path: Path) -> None:
    truth = read_truth(write(tmp_path / "t.csv", "sop_instance_uid,diagnosis,age,sex,anatomic_site\na,NV,50,F,back\n"))
    cases, _, _ = join(truth, [output("a", sex="male")])
    assert (cases[0].age, cases[0].sex, cases[0].anatomic_site) == (50, "male", "back")


def test_audit_row_becomes_an_output(tmp_path: Path) -> None:
    seg = tmp_path / "outbox" / "S1" / "9.9.9.dcm"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"")
    row = {"study_uid": "S1", "sop_instance_uid": "a", "accession_number": "", "status": "analysed",
           **{f"p_{c}": UNIFORM[c] for c in CLASS_CODES}, "veto_threshold": 0.4, "bcc_probability": None,
           "age": "063Y", "sex": "M", "anatomic_site": "", "analysed_at": "2026", "seg_sop_uid": "9.9.9"}  # fmt: skip
    out = output_from_audit_row(row, (tmp_path / "results", tmp_path / "outbox"))
    assert out.accession_number is None and out.veto_threshold == 0.4 and out.age == 63 and out.sex == "male"
    assert out.predicted_mask == seg and out.probabilities == UNIFORM
    assert output_from_audit_row({**row, "seg_sop_uid": "1.2"}, (tmp_path / "outbox",)).predicted_mask is None
