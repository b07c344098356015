"""`dermnode validate` refuses bad invocations with a clear message and writes nothing half-done."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dermnode.cli import app


def invoke(*args: str, home: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", *args], env={"DERMNODE_HOME": str(home), "DERMNODE_CONFIG": "",
                                                               "DERMNODE_DATABASE_URL": ""})  # fmt: skip
    return result.exit_code, result.output


def test_bad_invocations_say_what_is_wrong(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("study_uid,diagnosis\n1.2,MEL\n")
    out = tmp_path / "out"
    code, output = invoke("--truth", str(truth), "--out", str(out), home=tmp_path)
    assert code == 2 and "exactly one of --audit and --sr-dir" in output
    code, output = invoke("--truth", str(truth), "--audit", "--sr-dir", str(tmp_path), "--out", str(out), home=tmp_path)
    assert code == 2 and "exactly one of --audit and --sr-dir" in output
    code, output = invoke("--truth", str(tmp_path / "none.csv"), "--audit", "--out", str(out), home=tmp_path)
    assert code == 2 and "does not exist" in output
    code, output = invoke("--truth", str(truth), "--audit", "--out", str(out), home=tmp_path)
    assert code == 2 and "no audit database" in output
    code, output = invoke("--truth", str(truth), "--sr-dir", str(tmp_path / "nowhere"), "--out", str(out), home=tmp_path)
    assert code == 2 and "SR folder" in output
    assert not out.exists()


def test_an_empty_audit_store_gives_a_report_and_an_error(tmp_path: Path) -> None:
    from dermnode.node.audit import AuditStore

    AuditStore(f"sqlite:///{tmp_path / 'dermnode.db'}").close()
    truth = tmp_path / "truth.csv"
    truth.write_text("accession_number,diagnosis\nA1,MEL\nA2,lichen\n")
    code, output = invoke("--truth", str(truth), "--audit", "--out", str(tmp_path / "out"), home=tmp_path)
    assert code == 2, output  # nothing was validated: an error, with the report saying why
    assert "0 cases joined on accession_number; 2 truth rows excluded" in output
    assert "dermnode: error: no case to validate: none of the 2 truth rows matched" in output
    html = (tmp_path / "out" / "report.html").read_text()
    assert "no recorded output with this accession_number" in html and "unknown diagnosis &#x27;lichen&#x27;" in html
