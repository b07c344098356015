"""`dermnode demo`: a whole node on a bare machine, a few studies through it, the results shown.

It starts, in a temporary home: a local destination (Orthanc when installed, else a small
pynetdicom storage SCP of its own), the node (SCP, study assembly, outbox) with the embedded
queue and worker, then dicomizes a few images (from a folder, else generated synthetic
lesion-like images, clearly labelled as such), sends them to the node with C-STORE, waits until
the destination holds every study's SR, prints a table and where the SEG/SR files are, and stops
everything it started.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from dermnode.contract import PatientMetadata
from dermnode.local_processes import free_port, stop, wait_for_port

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin"


# ------------------------------------------------------------------------------------- images


def synthetic_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """SYNTHETIC lesion-like images (a coloured ellipse on skin tone, with noise): not real lesions."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        skin = rng.uniform([200, 150, 120], [240, 190, 160])
        pixels = np.clip(skin + rng.normal(0, 6, (384, 384, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        lesion = tuple(int(v) for v in rng.uniform([60, 30, 20], [150, 90, 70]))
        cx, cy = rng.uniform(150, 234, 2)
        rx, ry = rng.uniform(50, 110, 2)
        ImageDraw.Draw(image).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=lesion)
        path = folder / f"SYNTHETIC_{i + 1:03d}.png"
        image.filter(ImageFilter.GaussianBlur(3)).save(path)
        paths.append(path)
    return paths


def dicomize(images: list[Path], folder: Path) -> list[Path]:
    """One Dermoscopic Photography study per image (image id = file name)."""
    from dermnode.dicom_templates.image_conversion import dicomize_image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for image in images:
        ds = dicomize_image(image, image.stem, PatientMetadata())
        path = folder / f"{image.stem}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


# -------------------------------------------------------------------------------- destination


class LocalDestination(Protocol):
    """Where the node sends its results; ``sr_studies()`` lists the studies that received an SR."""

    address: str
    description: str

    def sr_studies(self) -> set[str]: ...


class OrthancDestination:
    def __init__(self, port: int, http_port: int) -> None:
        self.address = f"ORTHANC@127.0.0.1:{port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.description = f"Orthanc (DICOM {self.address}, web {self.http}/app/explorer.html)"

    def _get(self, route: str):
        with urllib.request.urlopen(f"{self.http}{route}", timeout=10) as reply:
            return json.loads(reply.read())

    def sr_studies(self) -> set[str]:
        studies = {item["ID"]: item["MainDicomTags"]["StudyInstanceUID"] for item in self._get("/studies?expand")}
        return {studies[item["ParentStudy"]] for item in self._get("/series?expand")
                if item["MainDicomTags"].get("Modality") == "SR" and item["ParentStudy"] in studies}


class FolderDestination:
    def __init__(self, port: int, folder: Path) -> None:
        self.address = f"DEMOPACS@127.0.0.1:{port}"
        self.folder = folder
        self.description = f"a pynetdicom storage SCP ({self.address}) writing to {folder}"

    def sr_studies(self) -> set[str]:
        return {path.parent.name for path in self.folder.glob("*/*.dcm") if path.stem.startswith("SR_")}


@contextmanager
def local_destination(home: Path) -> Iterator[LocalDestination]:
    """Orthanc when installed, else a pynetdicom storage SCP; stopped on exit."""
    orthanc = shutil.which("Orthanc", path=SEARCH_PATH)
    if orthanc:
        with _orthanc(orthanc, home / "orthanc") as destination:
            yield destination
    else:
        with _storage_scp(home / "destination") as destination:
            yield destination


@contextmanager
def _orthanc(binary: str, folder: Path) -> Iterator[OrthancDestination]:
    folder.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    config = {
        "Name": "dermnode-demo-pacs", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"), "DicomAet": "ORTHANC", "DicomPort": port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "Plugins": [],
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    with (folder / "orthanc.log").open("w") as log:
        process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(http_port)
        wait_for_port(port)
        yield OrthancDestination(port, http_port)
    finally:
        stop(process)


@contextmanager
def _storage_scp(folder: Path) -> Iterator[FolderDestination]:
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    names = {SR_CLASS: "SR", SEG_CLASS: "SEG", KOS_CLASS: "KOS"}

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        target = folder / str(ds.StudyInstanceUID)
        target.mkdir(parents=True, exist_ok=True)
        prefix = names.get(str(ds.SOPClassUID), "OT")
        ds.save_as(target / f"{prefix}_{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    port = free_port()
    ae = AE(ae_title="DEMOPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield FolderDestination(port, folder)
    finally:
        server.shutdown()


# -------------------------------------------------------------------------------------- demo


@contextmanager
def running_node(settings) -> Iterator[object]:
    """The node with the embedded queue and its worker, as `dermnode serve` runs it."""
    from functools import partial

    from dermnode.node.serve import Node
    from dermnode.workers.embedded import EmbeddedQueue
    from dermnode.workers.tasks import enqueue_study

    with EmbeddedQueue(settings) as queue, Node(queue.settings, partial(enqueue_study, queue.settings)) as node:
        node.queue = queue
        yield node


def run_demo(images_dir: Path | None, count: int, keep: Path | None = None, timeout: float = 900.0) -> int:
    """The whole demo; returns the exit status (0 when every study came back)."""
    from rich.console import Console

    from dermnode.node.send import store_files
    from dermnode.node.settings import load_settings, parse_destination

    console = Console(stderr=True)
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="dermnode-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    if images_dir is not None:
        from dermnode.dicom_templates.dicomize import image_files

        images = image_files(images_dir)[:count]
        if not images:
            console.print(f"[red]no .jpg/.jpeg/.png images in {images_dir}")
            return 2
        source = f"{len(images)} images from {images_dir}"
    else:
        images = synthetic_images(home / "synthetic-images", count)
        source = f"{len(images)} SYNTHETIC lesion-like images (generated ellipses, not real lesions)"
    console.print(f"demo home: {home}\nimages: {source}")
    files = dicomize(images, home / "studies")
    with ExitStack() as stack:
        destination = stack.enter_context(local_destination(home))
        console.print(f"destination: {destination.description}")
        settings = load_settings(home=home / "node", port=free_port(), destinations=[destination.address],
                                 quiet_seconds=1.0, broker_url="", retry_base_seconds=1.0, log_level="WARNING")
        console.print(f"starting the node on port {settings.port} with the embedded queue...")
        node = stack.enter_context(running_node(settings))
        outcomes = store_files(files, parse_destination(f"{settings.ae_title}@127.0.0.1:{settings.port}"),
                               calling_ae="DEMO")
        sent = [o for o in outcomes if o.stored]
        for outcome in outcomes:
            if not outcome.stored:
                console.print(f"[red]not accepted by the node: {outcome.path.name}: {outcome.error}")
        studies = _study_uids(files)
        started = time.monotonic()
        with console.status("waiting for the results at the destination (first study loads the models)...") as status:
            while time.monotonic() - started < timeout:
                node.queue.check()
                done = destination.sr_studies() & set(studies)
                status.update(f"{len(done)} of {len(sent)} studies back at the destination "
                              f"({time.monotonic() - started:.0f} s)")
                if len(done) >= len(sent):
                    break
                time.sleep(1.0)
        elapsed = time.monotonic() - started
        rows = node.audit.analysed_rows()
        _print_results(rows, studies, settings, destination, elapsed)
        complete = len(destination.sr_studies() & set(studies)) >= len(sent) and len(sent) == len(files)
    console.print("stopped the node, the worker, the embedded Redis and the destination"
                  + ("" if keep else f"; files kept in {home} until you delete it"))
    return 0 if complete else 1


def _study_uids(files: list[Path]) -> dict[str, str]:
    from pydicom import dcmread

    return {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID): f.stem for f in files}


def _print_results(rows: list[dict], studies: dict[str, str], settings, destination, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dermnode demo: {len(studies)} studies, {elapsed:.0f} s")
    for column in ("study", "image", "status", "top class", "P(malignant)", "veto", "seconds"):
        table.add_column(column, no_wrap=column in ("study", "image"))
    files = []
    for row in rows:
        if row["study_uid"] not in studies:
            continue
        seconds = sum(v for k, v in row.items() if k.startswith("seconds_") and v)
        probability = row["malignancy_probability"]
        table.add_row(
            "…" + row["study_uid"][-8:], studies[row["study_uid"]], row["status"], row["top_class"] or "-",
            "-" if probability is None else f"{probability:.3f}",
            {True: "VETO", False: "no"}.get(row["veto"], "-"), f"{seconds:.2f}",
        )
        for kind in ("seg", "sr", "kos"):
            if row[f"{kind}_sop_uid"]:
                files.append(f"{kind.upper():3} {settings.outbox_dir / row['study_uid'] / (row[f'{kind}_sop_uid'] + '.dcm')}")
    console = Console()
    console.print(table)
    console.print(f"results sent to {destination.description}; copies in the node's outbox:")
    for line in files:
        console.print(f"  {line}", soft_wrap=True)
