"""Real peers for the tests: Orthanc as the PACS, dcmtk's storescp, redis-server, and dciodvfy.

Each peer binds to 127.0.0.1 on a free port, lives in a temporary folder and is stopped by the test
that started it. A test that needs a missing tool is skipped with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from dermnode.local_processes import free_port, stop, wait_for_port

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
REPO = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The path of a command-line tool, or skip the test that needs it."""
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it: see .ci/run)")
    return path


def shared_data() -> Path:
    """The ISIC data folder (../shared/data or $DERMNODE_TEST_DATA), or skip."""
    path = Path(os.environ.get("DERMNODE_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (path / "metadata.csv").is_file():
        pytest.skip(f"no data folder at {path} (set DERMNODE_TEST_DATA)")
    return path


def small_data_folder(root: Path, records: list) -> None:
    """A data folder in the shared layout holding links to a few real images (and masks)."""
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "collection", "diagnosis", "folder_label", "age_approx", "sex", "anatom_site_general",
                         "lesion_id", "diagnosis_confirmed_by"])
        for r in records:
            (root / r.collection / "images").mkdir(parents=True, exist_ok=True)
            (root / r.collection / "images" / r.image_path.name).symlink_to(r.image_path)
            if r.mask_path is not None:
                (root / r.collection / "masks").mkdir(exist_ok=True)
                (root / r.collection / "masks" / r.mask_path.name).symlink_to(r.mask_path)
            m = r.metadata
            writer.writerow([r.image_id, r.collection, r.diagnosis, "", m.age or "", m.sex or "", m.anatomic_site or "",
                             r.lesion_id or "", r.confirmed_by or ""])


# ---------------------------------------------------------------------------------------- dciodvfy


@dataclass
class Verdict:
    errors: list[str]
    warnings: list[str]
    output: str


def dciodvfy(path: Path) -> Verdict:
    """Run dicom3tools' dciodvfy on a file; errors and warnings as lists of lines."""
    result = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    lines = (result.stdout + result.stderr).splitlines()
    return Verdict(
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
        output="\n".join(lines),
    )


def assert_dciodvfy_clean(path: Path) -> Verdict:
    verdict = dciodvfy(path)
    assert not verdict.errors, f"dciodvfy errors in {path}:\n{verdict.output}"
    return verdict


# ----------------------------------------------------------------------------------------- Orthanc


@dataclass
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen
    storage: Path

    @property
    def address(self) -> str:
        """`AE@host:port`, the destination syntax of the node's settings."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def get(self, route: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{route}", timeout=10) as reply:
            return json.loads(reply.read())

    def instances(self) -> list[dict]:
        """Every stored instance with its main DICOM tags."""
        return [self.get(f"/instances/{iid}?full=false") or {} for iid in self.get("/instances")]

    def tag(self, instance_id: str, tag: str) -> str:
        """One tag's value as text, e.g. tag(iid, "0008,0016") for the SOP Class UID."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http_port}/instances/{instance_id}/content/{tag}", timeout=10
        ) as reply:
            return reply.read().decode().strip("\x00 ")

    def sop_classes(self) -> list[str]:
        return [self.tag(iid, "0008,0016") for iid in self.get("/instances")]

    def file(self, instance_id: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/instances/{instance_id}/file", timeout=30) as r:
            return r.read()


@contextmanager
def orthanc(directory: Path, aet: str = "ORTHANC", accept_from: dict[str, int] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc on loopback ports with its storage under ``directory``; stop it afterwards."""
    binary = tool("Orthanc")
    directory.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "dermnode-test-pacs",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "storage"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": False,
        "DicomModalities": {name: [name, "127.0.0.1", port] for name, port in (accept_from or {}).items()},
        "Plugins": [],
        "HttpServerEnabled": True,
        "SaveJobs": False,
        "StableAge": 1,
    }
    config_file = directory / "orthanc.json"
    config_file.write_text(json.dumps(config))
    log = (directory / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(config_file)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port, process=process)
        wait_for_port(dicom_port, process=process)
        yield Orthanc(aet, dicom_port, http_port, process, directory / "storage")
    finally:
        stop(process)
        log.close()


# ---------------------------------------------------------------------------------------- storescp


@contextmanager
def storescp(directory: Path, aet: str = "STORESCP") -> Iterator[tuple[str, int]]:
    """dcmtk's storescp on a loopback port writing into ``directory``; yields (aet, port)."""
    binary = tool("storescp")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--aetitle", aet, "--output-directory", str(directory), "--promiscuous", "+xa", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield aet, port
    finally:
        stop(process)


# ------------------------------------------------------------------------------------ redis-server


@contextmanager
def redis_server(directory: Path, bind: tuple[str, ...] = ("127.0.0.1",), password: str | None = None) -> Iterator[str]:
    """A private redis-server on a free port of the ``bind`` addresses (loopback by default), no
    persistence, with ``password`` (needed for peers beyond loopback); yields its URL on the first address."""
    binary = tool("redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", *bind, "--port", str(port), "--save", "", "--appendonly", "no",
         *(["--requirepass", password] if password else []),
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield f"redis://{':' + password + '@' if password else ''}{bind[0]}:{port}/0"
    finally:
        stop(process)
