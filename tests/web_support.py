"""Helpers for the web tests: `dermnode serve` as a process with its HTTP server, HTTP calls, and a node
that real studies went through (session fixture ``served_studies``)."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from dermnode.contract import PatientMetadata
from dermnode.web.auth import hash_password, new_token
from node_support import make_dataset, storescp_on, write
from peers import free_port, shared_data, tool, wait_for_port
from serve_process import end_serve, start_serve

OPERATOR, OPERATOR_PASSWORD = "alice", "alice-operator-1"
READER, READER_PASSWORD = "bob", "bob-reads-only-1"
TOKEN, TOKEN_ENTRY = new_token()
USERS = f"{OPERATOR}:operator:{hash_password(OPERATOR_PASSWORD)},{READER}:read-only:{hash_password(READER_PASSWORD)}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def http(method: str, url: str, user: tuple[str, str] | None = None, token: str | None = None,
         headers: dict[str, str] | None = None, data: bytes | None = None) -> Reply:
    """One HTTP request, redirects not followed; any status comes back as a Reply."""
    headers = dict(headers or {})
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as answer:
            return Reply(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def wait_until(condition: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@dataclass
class Served:
    """A running `dermnode serve`: its process, addresses and log."""

    process: subprocess.Popen
    base: str
    dicom_port: int
    home: Path
    log: Path
    env: dict[str, str]
    studies: dict[str, str] = field(default_factory=dict)  # patient ID -> study UID
    pacs: str = ""  # the destination that answers
    dead: str = ""  # the veto destination that nothing listens on

    def get(self, path: str, **kwargs: Any) -> Reply:
        return http("GET", self.base + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Reply:
        return http("POST", self.base + path, **kwargs)

    def readyz(self) -> dict:
        return self.get("/readyz").json()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dermnode.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=60)


def serve_env(home: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DERMNODE_")}
    env.update(DERMNODE_HOME=str(home), DERMNODE_PORT=str(free_port()), DERMNODE_HTTP_PORT=str(free_port()),
               DERMNODE_QUIET_SECONDS="0.5", DERMNODE_WEB_USERS=USERS, DERMNODE_WEB_TOKENS=f"monitor:read-only:{TOKEN_ENTRY}",
               DERMNODE_DISPATCH_POLL_SECONDS="0.3", DERMNODE_RETRY_BASE_SECONDS="0.5", DERMNODE_RETRY_MAX_SECONDS="2",
               DERMNODE_RECONCILE_SECONDS="5", OMP_NUM_THREADS="1")
    env.update(overrides)
    return env


@contextmanager
def running_serve(home: Path, **overrides: str) -> Iterator[Served]:
    """`dermnode serve` with its HTTP server on free ports; stopped with SIGTERM afterwards, its whole
    process group with it (`serve_process`)."""
    env = serve_env(home, **overrides)
    log = home.parent / f"{home.name}-serve.log"
    home.mkdir(parents=True, exist_ok=True)
    process = start_serve(env, log)
    served = Served(process, f"http://127.0.0.1:{env['DERMNODE_HTTP_PORT']}", int(env["DERMNODE_PORT"]), home, log, env)
    try:
        wait_for_port(int(env["DERMNODE_HTTP_PORT"]), timeout=60, process=process)
        yield served
    finally:
        end_serve(process)


def isic_studies(folder: Path, diagnoses: tuple[str, ...]) -> list[Path]:
    """One dicomized ISIC image per diagnosis, each its own study, patient PAT<n> and accession ACC<n>."""
    data = shared_data()
    wanted, files = list(diagnoses), []
    with (data / "metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            path = data / row["collection"] / "images" / f"{row['image_id']}.jpg"
            if row["collection"] == "isic-8class" and row["diagnosis"] in wanted and path.is_file():
                from dermnode.dicom_templates.image_conversion import dicomize_image

                wanted.remove(row["diagnosis"])
                age = float(row["age_approx"]) if row["age_approx"].strip() else None
                ds = dicomize_image(path, row["image_id"], PatientMetadata(age, row["sex"] or None, None))
                ds.PatientID, ds.AccessionNumber = f"PAT{len(files)}", f"ACC{len(files)}"
                files.append(write(ds, folder / f"{len(files)}.dcm"))
    assert not wanted, f"no images for {wanted}"
    return files


def storescu(served: Served, files: list[Path]) -> None:
    sent = subprocess.run([tool("storescu"), "--required", "--propose-jpeg8", "-aet", "MODALITY", "-aec", "DERMNODE",
                           "127.0.0.1", str(served.dicom_port), *map(str, files)], capture_output=True, text=True,
                          timeout=120)
    assert sent.returncode == 0, sent.stderr


@pytest.fixture(scope="session")
def served_studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """serve (embedded queue, starter models) with a storescp destination and an unreachable veto destination,
    after four ISIC studies and one not-analysable picture went through it."""
    tool("storescu")
    tmp = tmp_path_factory.mktemp("web")
    files = isic_studies(tmp / "studies", ("MEL", "NV", "BCC", "BKL"))
    tiny = make_dataset(tmp / "tiny-src", "TINY", size=(40, 30), seed=7)  # a tiny noise picture: not analysable
    tiny.PatientID, tiny.AccessionNumber = "PATTINY", "ACCTINY"
    files.append(write(tiny, tmp / "studies" / "tiny.dcm"))
    dead = f"DEAD@127.0.0.1:{free_port()}"
    with storescp_on(tmp / "pacs", free_port(), aet="PACS") as pacs, \
            running_serve(tmp / "home", DERMNODE_DESTINATIONS=pacs, DERMNODE_VETO_DESTINATIONS=dead) as served:
        storescu(served, files)
        wait_until(lambda: served.get("/readyz").status == 200, 120, "readiness", served.log)

        def settled() -> bool:  # analysed, and every destination tried at least once
            found = served.get("/api/studies", token=TOKEN).json()["studies"]
            return len(found) == 5 and all(study["state"] in ("delivered", "retrying") for study in found)

        wait_until(settled, 240, "five analysed and exported studies", served.log)
        for study in served.get("/api/studies", token=TOKEN).json()["studies"]:
            served.studies[study["patient_id"]] = study["study_uid"]
        served.pacs, served.dead = pacs, dead
        yield served
