"""Helpers for the node room's tests: small dicomized images, settings on free ports, a running node."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmwrite
from pydicom.uid import generate_uid

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import dicomize_image
from dermnode.node.settings import Settings
from peers import free_port, stop, tool, wait_for_port


def make_dataset(folder: Path, image_id: str, size: tuple[int, int] = (64, 48), study_uid: str | None = None,
                 seed: int = 0) -> Dataset:
    """A Dermoscopic Photography instance (JPEG Baseline) of a small random colour image."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image_path = folder / f"{image_id}.png"
    Image.fromarray(pixels).save(image_path)
    ds = dicomize_image(image_path, image_id, PatientMetadata(age=55, sex="female", anatomic_site="anterior torso"))
    image_path.unlink()
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def make_study(folder: Path, count: int, prefix: str = "IMG") -> tuple[str, list[Path]]:
    """``count`` instances of one new study written under ``folder``; returns (study UID, files)."""
    study_uid = generate_uid()
    files = [write(make_dataset(folder / "src", f"{prefix}{i}", study_uid=study_uid, seed=i), folder / f"{prefix}{i}.dcm")
             for i in range(count)]
    return study_uid, files


def node_settings(tmp: Path, **overrides: object) -> Settings:
    values = {"home": tmp / "home", "port": free_port(), "quiet_seconds": 0.5, "retry_base_seconds": 0.2,
              "retry_max_seconds": 1.0, "dispatch_poll_seconds": 0.2}
    values.update(overrides)
    return Settings(**values)


class RecordingEnqueue:
    """A stand-in for the Celery enqueue where a test is about the node's plumbing, not the queue."""

    def __init__(self, fail_times: int = 0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_times = fail_times

    def __call__(self, study_uid: str, key: str) -> str:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("broker unreachable")
        self.calls.append((study_uid, key))
        return f"task-{len(self.calls)}"


@contextmanager
def running_node(settings: Settings, enqueue: Callable[[str, str], str]) -> Iterator:
    from dermnode.node.serve import Node

    with Node(settings, enqueue) as node:
        yield node


@contextmanager
def storescp_on(folder: Path, port: int, aet: str = "STORESCP") -> Iterator[str]:
    """dcmtk's storescp accepting every transfer syntax it knows (JPEG included) on ``port``;
    yields its ``AE@host:port``."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([tool("storescp"), "--aetitle", aet, "--output-directory", str(folder),
                                "--promiscuous", "+xa", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process=process)
        yield f"{aet}@127.0.0.1:{port}"
    finally:
        stop(process)


def storescu(settings: Settings, files: list[Path], calling_ae: str = "STORESCU") -> subprocess.CompletedProcess:
    """dcmtk's storescu sending ``files`` to the node (one association)."""
    return subprocess.run(
        [tool("storescu"), "--required", "--propose-jpeg8", "--no-halt", "-aet", calling_ae, "-aec", settings.ae_title, "127.0.0.1", str(settings.port),
         *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )
