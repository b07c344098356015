"""User mistakes at the command line: one line on stderr, a non-zero exit, never a traceback.

Every case runs the real `dermnode` command in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from node_support import make_dataset, write
from peers import shared_data

HEADER = "image_id,age_approx,sex,anatom_site_general\n"


def dermnode(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
    environment.update(DERMNODE_HOME=str(home), OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "dermnode.cli", *args], env=environment, capture_output=True,
                          text=True, timeout=120, cwd=home.parent)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("dermnode: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "ISIC_0000001.jpg")
    return folder


@pytest.mark.parametrize("content, words", [
    ("image_id,sex\nISIC_0000001,male\n", ["lacks the column(s) age_approx, anatom_site_general"]),
    (HEADER + "ISIC_0000001,fifty,male,back\n", ["line 2", "age_approx of ISIC_0000001 is not a number"]),
    ("", ["is empty", "image_id,age_approx"]),
])
def test_dicomize_with_a_bad_csv(tmp_path: Path, images: Path, content: str, words: list[str]) -> None:
    csv = tmp_path / "metadata.csv"
    csv.write_text(content)
    result = dermnode("dicomize", str(images), "--metadata", str(csv), "--out", str(tmp_path / "out"), home=tmp_path / "home")
    assert_one_line_error(result, "--metadata", *words)
    assert not list((tmp_path / "out").glob("*.dcm"))


def test_dicomize_and_send_on_an_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    csv = tmp_path / "metadata.csv"
    csv.write_text(HEADER)
    home = tmp_path / "home"
    assert_one_line_error(dermnode("dicomize", str(empty), "--metadata", str(csv), "--out", str(tmp_path / "o"), home=home),
                          "no images", str(empty))
    assert_one_line_error(dermnode("send", str(empty), "--to", "PACS@127.0.0.1:104", home=home), "no files to send")


def test_report_show_on_files_that_are_not_a_dermnode_sr(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    image = write(make_dataset(tmp_path / "src", "IMG"), tmp_path / "image.dcm")
    home = tmp_path / "home"
    assert_one_line_error(dermnode("report", "show", str(text), home=home), "is not a DICOM file")
    assert_one_line_error(dermnode("report", "show", str(image), home=home),
                          "Dermoscopic Photography", "not a dermnode SR")


@pytest.mark.parametrize("command", [["audit", "list"], ["audit", "verify"],
                                     ["validate", "--audit", "--truth", "truth.csv", "--out", "report"]])
def test_unparsable_database_url(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "truth.csv").write_text("sop_instance_uid,diagnosis\n1.2.3,MEL\n")
    result = dermnode(*command, home=tmp_path / "home", DERMNODE_DATABASE_URL="postgresql+psycopg//me:s3cret@db")
    line = assert_one_line_error(result, "cannot be parsed")
    assert "s3cret" not in line


def test_unreachable_database_names_it_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    result = dermnode("audit", "list", home=tmp_path / "home",
                      DERMNODE_DATABASE_URL="postgresql+psycopg://me:s3cret@127.0.0.1:1/dermnode")
    line = assert_one_line_error(result, "cannot be opened", "me:***@127.0.0.1:1")
    assert "s3cret" not in line


def test_audit_list_on_a_wrong_home_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "not-the-home"
    assert_one_line_error(dermnode("audit", "list", home=home), "no audit database", str(home / "dermnode.db"))
    assert not home.exists()


def test_validate_with_no_matched_case(tmp_path: Path) -> None:
    (tmp_path / "truth.csv").write_text("sop_instance_uid,diagnosis\n1.2.3,MEL\n")
    (tmp_path / "srs").mkdir()
    result = dermnode("validate", "--sr-dir", str(tmp_path / "srs"), "--truth", str(tmp_path / "truth.csv"),
                      "--out", str(tmp_path / "report"), home=tmp_path / "home")
    assert_one_line_error(result, "no case to validate", "none of the 1 truth rows", "report.html lists why")


def test_usage_errors_and_bad_settings_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert_one_line_error(dermnode("send", str(tmp_path), home=home), "Missing option '--to'", "--help")
    assert_one_line_error(dermnode("send", str(tmp_path), "--to", "nonsense", home=home), "AE@host:port")
    assert_one_line_error(dermnode("audit", "list", home=home, DERMNODE_PORT="99999"), "DERMNODE_PORT")
    assert_one_line_error(dermnode("evaluate", "classifier", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                   home=home), "is not a data folder", "metadata.csv")
    assert_one_line_error(dermnode("prune", home=home, DERMNODE_RETENTION_DAYS="0"), "retention_days is 0, which keeps everything")


def test_left_out_recording_options_need_each_other(tmp_path: Path) -> None:
    data, home = str(shared_data()), tmp_path / "home"
    assert_one_line_error(dermnode("evaluate", "classifier", "--data", data, "--out", str(tmp_path / "o"),
                                   "--record-left-out", str(tmp_path), home=home), "--record-left-out needs --source")
    assert_one_line_error(dermnode("evaluate", "classifier", "--data", data, "--out", str(tmp_path / "o"),
                                   "--as-choice", "no colour constancy", home=home), "--as-choice names a choice")


def test_version(tmp_path: Path) -> None:
    result = dermnode("--version", home=tmp_path / "home")
    assert result.returncode == 0 and result.stdout.startswith("dermnode ") and not result.stderr


def test_config_check_masks_secrets(tmp_path: Path) -> None:
    result = dermnode("config", "check", home=tmp_path / "home", DERMNODE_AUDIT_HMAC_KEY="hm4c-s3cret",
                      DERMNODE_DATABASE_URL="postgresql+psycopg://me:s3cret@127.0.0.1:1/dermnode",
                      DERMNODE_BROKER_URL="redis://:r3dis-pw@127.0.0.1:1/0")
    output = result.stdout + result.stderr
    assert result.returncode == 1  # the database and the broker cannot be reached
    assert "s3cret" not in output and "r3dis-pw" not in output
    assert "database_url = postgresql+psycopg://me:***@127.0.0.1:1/dermnode" in output
    assert "broker_url = redis://:***@127.0.0.1:1/0" in output and "audit_hmac_key = (set)" in output
