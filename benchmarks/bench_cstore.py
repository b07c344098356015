"""C-STORE intake rate: `dermnode serve` (durable spool + audit) versus dcmtk's storescp, same files, same run.

    .venv/bin/python benchmarks/bench_cstore.py [--files 200] [--rounds 3] [--data ../shared/data]

Makes N Dermoscopic Photography instances (JPEG Baseline) with ``dicomize_image`` from the ISIC
images in the data folder (512x512 segmentation-challenge images; random images when the folder is
absent), then sends all of them to each receiver in turn, per round, over 1 storescu association
and over K parallel ones (each with its share of the files), with fresh SOP Instance UIDs every
round (`+II`), and prints instances per second (the best and the median round). The node runs with a quiet period longer than the benchmark, so no analysis competes
for the CPU; its broker is a private redis-server. storescp runs with --fork (one process per
association, so parallel associations are parallel for it too) and writes without fsync; the node
makes every file durable (fdatasync, rename, fsync of the folder) before it answers. A third
receiver, a pynetdicom SCP whose handler stores nothing, shows the ceiling that pynetdicom itself
puts on any node built on it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmwrite
from tqdm import tqdm

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import (
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    dicomize_image,
)
from dermnode.local_processes import free_port, stop, wait_for_port

REPO = Path(__file__).resolve().parents[1]
#: dcmtk leaves Nagle's algorithm on unless TCP_NODELAY is set, which costs ~90 ms per instance
#: on loopback; both dcmtk tools run with it set, so storescp is measured at its best.
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def binary(name: str) -> str:
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        sys.exit(f"{name} is not installed (Debian package dcmtk / redis-server)")
    return path


def make_files(folder: Path, count: int, data: Path) -> list[Path]:
    images = sorted((data / "isic2018-task1" / "images").glob("ISIC_*.jpg"))[:count]
    folder.mkdir(parents=True, exist_ok=True)
    if len(images) < count:
        print(f"no ISIC images under {data}: using random 512x512 images")
        rng = np.random.default_rng(0)
        images = []
        for i in range(count):
            path = folder / f"random_{i}.png"
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
            images.append(path)
    files = []
    for image in tqdm(images, desc="dicomize", unit="image"):
        path = folder / f"{image.stem}.dcm"
        dcmwrite(path, dicomize_image(image, image.stem, PatientMetadata()), enforce_file_format=True)
        files.append(path)
    return files


def noop_pynetdicom_scp(port: int):
    """A pynetdicom SCP whose C-STORE handler stores nothing: the floor under any pynetdicom node."""
    from pynetdicom import AE, evt

    ae = AE("NOOP")
    ae.maximum_pdu_size = 0
    for sop_class in SUPPORTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(SUPPORTED_TRANSFER_SYNTAXES))
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])


def send(port: int, aet: str, files: list[Path], associations: int = 1) -> float:
    """Seconds to send every file with ``associations`` storescu processes in parallel."""
    start = time.perf_counter()
    processes = [
        subprocess.Popen([binary("storescu"), "--required", "--propose-jpeg8", "--no-halt", "+II", "-aet", "BENCH",
                          "-aec", aet, "127.0.0.1", str(port), *map(str, files[i::associations])],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=DCMTK_ENV)
        for i in range(associations)
    ]
    outputs = [(process.communicate()[0], process.returncode) for process in processes]
    seconds = time.perf_counter() - start
    for output, returncode in outputs:
        if returncode != 0:
            sys.exit(f"storescu to {aet} failed:\n{output}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4],
                        help="parallel storescu associations to measure (each sends its share of the files)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cstore-", dir=REPO / "runs" if (REPO / "runs").is_dir() else None) as tmp:
        root = Path(tmp)
        files = make_files(root / "files", args.files, args.data)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} files, {megabytes:.1f} MB, transfer syntax JPEG Baseline")

        processes = []
        noop_port = free_port()
        noop = noop_pynetdicom_scp(noop_port)
        try:
            scp_port = free_port()
            (root / "storescp").mkdir()
            processes.append(subprocess.Popen(
                [binary("storescp"), "--aetitle", "STORESCP", "--output-directory", str(root / "storescp"),
                 "--promiscuous", "+xa", "--fork", str(scp_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=DCMTK_ENV))
            redis_port = free_port()
            processes.append(subprocess.Popen(
                [binary("redis-server"), "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            node_port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
            env.update(DERMNODE_HOME=str(root / "node"), DERMNODE_PORT=str(node_port), DERMNODE_AE_TITLE="DERMNODE",
                       DERMNODE_QUIET_SECONDS="3600", DERMNODE_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
                       DERMNODE_LOG_LEVEL="WARNING", DERMNODE_HTTP_PORT="0")
            processes.append(subprocess.Popen([sys.executable, "-m", "dermnode.cli", "serve"], env=env,
                                              stdout=(root / "serve.log").open("w"), stderr=subprocess.STDOUT))
            for port in (scp_port, redis_port, node_port):
                wait_for_port(port)

            timings: dict[tuple[int, str], list[float]] = {}
            for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
                for k in args.associations:
                    timings.setdefault((k, "dermnode serve"), []).append(send(node_port, "DERMNODE", files, k))
                    timings.setdefault((k, "dcmtk storescp"), []).append(send(scp_port, "STORESCP", files, k))
                    timings.setdefault((k, "pynetdicom no-op"), []).append(send(noop_port, "NOOP", files, k))
        finally:
            noop.shutdown()
            for process in processes:
                stop(process, timeout=30)

        spooled = len(list((root / "node" / "spool").rglob("*.dcm")))
        expected = len(files) * args.rounds * len(args.associations)
        assert spooled == expected, f"the node spooled {spooled} of {expected} files"
        print(f"\n{'associations':>12} {'receiver':<16} {'best inst/s':>12} {'median inst/s':>14} {'best MB/s':>10}")
        rates = {}
        for (k, name), seconds in timings.items():
            best, median = len(files) / min(seconds), len(files) / statistics.median(seconds)
            rates[k, name] = median
            print(f"{k:>12} {name:<16} {best:>12.1f} {median:>14.1f} {megabytes / min(seconds):>10.1f}")
        for k in args.associations:
            ratio = rates[k, "dermnode serve"] / rates[k, "dcmtk storescp"]
            floor = rates[k, "pynetdicom no-op"] / rates[k, "dcmtk storescp"]
            print(f"{k} association(s): node / storescp (median rounds) = {ratio:.0%}  (target >= 50%); "
                  f"a pynetdicom SCP that stores nothing reaches {floor:.0%}")


if __name__ == "__main__":
    main()
