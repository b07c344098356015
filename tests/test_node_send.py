"""`dermnode send PATH... --to AE@HOST:PORT` with dcmtk's storescp as the receiver."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermnode.cli import app
from node_support import make_study, storescp_on
from peers import free_port

pytestmark = pytest.mark.peers


def test_send_files_and_folders(tmp_path: Path) -> None:
    _, files = make_study(tmp_path / "folder", 3)
    _, more = make_study(tmp_path / "single", 1, prefix="ONE")
    runner = CliRunner()
    with storescp_on(tmp_path / "received", free_port(), "ARCHIVE") as address:
        result = runner.invoke(app, ["send", str(tmp_path / "folder"), str(more[0]), "--to", address])
        assert result.exit_code == 0, result.output
        assert "4 of 4 files stored" in result.output
        assert len(list((tmp_path / "received").iterdir())) == 4

        (tmp_path / "folder" / "notes.txt").write_text("not DICOM")
        mixed = runner.invoke(app, ["send", str(tmp_path / "folder"), "--to", address])
        assert mixed.exit_code == 1
        assert "notes.txt" in mixed.output and "not a readable DICOM file" in mixed.output
        assert "3 of 4 files stored" in mixed.output


def test_send_reports_unreachable_and_malformed_destinations(tmp_path: Path) -> None:
    _, files = make_study(tmp_path / "folder", 1)
    runner = CliRunner()
    down = runner.invoke(app, ["send", str(files[0]), "--to", f"NOBODY@127.0.0.1:{free_port()}"])
    assert down.exit_code == 1 and "association with NOBODY" in down.output
    malformed = runner.invoke(app, ["send", str(files[0]), "--to", "NOBODY:104"])
    assert malformed.exit_code == 2 and "AE@host:port" in malformed.output
    missing = runner.invoke(app, ["send", str(tmp_path / "nothing"), "--to", "A@127.0.0.1:104"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_each_outcome_is_heard_while_the_association_is_open(tmp_path: Path) -> None:
    """The outbox marks a result sent as soon as its C-STORE is answered (a crash mid-association then
    re-sends at most the file in flight): on_outcome hears file n before file n+1 is sent."""
    from dermnode.node.send import store_files
    from dermnode.node.settings import parse_destination

    _, files = make_study(tmp_path / "study", 3)
    (tmp_path / "junk.dcm").write_text("not DICOM")
    received = tmp_path / "received"
    heard: list[tuple[str, int]] = []
    with storescp_on(received, free_port(), "ARCHIVE") as address:
        def on_outcome(outcome) -> None:  # noqa: ANN001
            heard.append((outcome.path.name, len(list(received.iterdir()))))

        outcomes = store_files([tmp_path / "junk.dcm", *files], parse_destination(address), on_outcome=on_outcome)
    assert [name for name, _ in heard] == ["junk.dcm"] + [f.name for f in files]
    assert [o.path.name for o in outcomes] == [name for name, _ in heard]
    assert [stored for _, stored in heard[1:]] == [1, 2, 3]  # heard before the next file arrived
