"""Soak: every acknowledged instance gets its result exactly once while parts of the node are killed.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py [--instances 1000] [--seed 1] [--kill-every 20]

Sends ``--instances`` Dermoscopic Photography instances (ISIC images from ``--data``, else synthetic
lesion-like ones) in studies of 1-5 images with dcmtk ``storescu`` (one instance per association,
retried like a modality would) to ``dermnode serve`` running its embedded queue, with dcmtk
``storescp`` as the destination PACS. Meanwhile a seeded schedule kills, with SIGKILL, about every
``--kill-every`` seconds one of: serve (restarted by this script), the embedded worker or the
embedded Redis (restarted by serve itself), or the PACS (restarted by this script). With
``--broker external`` Redis is a redis-server without persistence (a kill loses every message:
serve's reconciler must queue the studies again) and the worker a ``dermnode worker``, both
restarted by this script. When everything
is sent the kills go on while the results come back, until every acknowledged instance has its
result at the PACS or half of ``--timeout`` has passed; then the script waits (bounded by
``--timeout``) for the rest, and 15 s more for anything sent twice, and prints

* sent / acknowledged (C-STORE success) / analysed (audit rows) / delivered (an SR for the source
  image at the PACS) / duplicated / lost (acknowledged, no SR at the PACS);
* duplicated, in two kinds: ``resent`` (one result object, same SOP Instance UID, received twice:
  the PACS or the node died between storing and acknowledging, so the node's outbox sent it again;
  a real PACS keeps one copy) and ``second result set`` (a source image with two different SRs);
* per part killed: kills, and the instances in flight at a kill of that part (acknowledged, not
  yet delivered) with how many of them were delivered, lost or got a second result set; and the
  resent result objects whose second copy came after a kill of that part (the last kill before it).

Targets: 0 lost, 0 second result sets. Slow on a small machine: analysis takes ~0.5-1 s per image.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
from pydicom import dcmread
from pydicom.uid import generate_uid

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import dicomize_image
from dermnode.local_processes import free_port, stop, wait_for_port
from dermnode.node.audit import AuditStore

REPO = Path(__file__).resolve().parents[1]
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22"}
PARTS = ("serve", "worker", "redis", "pacs")
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def binary(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if path is None:
        sys.exit(f"{name} is not installed (Debian package dcmtk)")
    return path


# ------------------------------------------------------------------------------------------ input
@dataclass
class Study:
    uid: str
    files: list[Path]
    sop_uids: list[str]


def make_studies(folder: Path, instances: int, rng: random.Random, data: Path) -> list[Study]:
    """Studies of 1-5 instances, ``instances`` in all, each instance with fresh UIDs."""
    from dermnode.workers.demo import synthetic_images

    images = sorted((data / "isic2018-task1" / "images").glob("ISIC_*.jpg"))[:50]
    if not images:
        print(f"no ISIC images under {data}: synthetic lesion-like images")
        images = synthetic_images(folder / "synthetic", 20)
    folder.mkdir(parents=True, exist_ok=True)
    bases = [dicomize_image(path, path.stem, PatientMetadata(50.0, "female", "back")) for path in images]
    studies, made = [], 0
    while made < instances:
        size = min(rng.randint(1, 5), instances - made)
        study_uid, series_uid = generate_uid(), generate_uid()
        study = Study(study_uid, [], [])
        for n in range(size):
            ds = copy.deepcopy(rng.choice(bases))
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study_uid, series_uid, n + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID = ds.AccessionNumber = f"SOAK{len(studies)}"
            path = folder / f"{len(studies):05d}-{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            study.files.append(path)
            study.sop_uids.append(str(ds.SOPInstanceUID))
        studies.append(study)
        made += size
    return studies


# ------------------------------------------------------------------------------------------ peers
@dataclass
class Peer:
    """A process this script starts, kills and starts again (serve, the PACS, an external Redis/worker)."""

    command: list[str]
    log: Path
    port: int | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        if self.port is not None:
            wait_for_port(self.port, timeout=120, process=self.process)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def child(self, needle: str) -> psutil.Process | None:
        """A child process whose command line contains ``needle`` (serve's embedded worker or Redis)."""
        if not self.alive():
            return None
        for process in psutil.Process(self.process.pid).children():
            try:
                if needle in " ".join(process.cmdline()):
                    return process
            except psutil.Error:  # gone, or a zombie its parent has not reaped yet
                continue
        return None


def node_environment(home: Path, port: int, destination: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
    env.update(
        DERMNODE_HOME=str(home), DERMNODE_PORT=str(port), DERMNODE_BROKER_URL=broker_url, DERMNODE_HTTP_PORT="0",
        DERMNODE_DESTINATIONS=destination, DERMNODE_QUIET_SECONDS="2", DERMNODE_RECONCILE_SECONDS="5",
        DERMNODE_VISIBILITY_TIMEOUT="60", DERMNODE_RESTORE_INTERVAL="2", DERMNODE_RETRY_BASE_SECONDS="0.5",
        DERMNODE_RETRY_MAX_SECONDS="5", DERMNODE_DISPATCH_POLL_SECONDS="0.5",
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return env


# ------------------------------------------------------------------------------------------ sending
@dataclass
class Sent:
    acknowledged_at: dict[str, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def send(studies: list[Study], port: int, sent: Sent, attempts: int = 15) -> None:
    """One instance per storescu association, each retried (1 s apart) until the node answers success."""
    for study in studies:
        for path, sop_uid in zip(study.files, study.sop_uids):
            for _ in range(attempts):
                result = subprocess.run(
                    [binary("storescu"), "--propose-jpeg8", "--required", "-aet", "SOAK", "-aec", "DERMNODE",
                     "127.0.0.1", str(port), str(path)], capture_output=True, env=DCMTK_ENV, timeout=60)
                if result.returncode == 0:
                    sent.acknowledged_at[sop_uid] = time.time()
                    break
                time.sleep(1.0)
            else:
                sent.refused.append(sop_uid)


# ------------------------------------------------------------------------------------------ killing
def killers(serve: Peer, pacs: Peer, redis: Peer | None, worker: Peer | None,
            rng: random.Random) -> dict[str, Callable[[], bool]]:
    """Per part, a function that SIGKILLs it (True if it was running). This script restarts serve, the
    PACS and an external Redis or worker after a short random pause; serve restarts its embedded ones."""
    def restarted(peer: Peer, pause: tuple[float, float]) -> Callable[[], bool]:
        def kill() -> bool:
            if not peer.alive():
                return False
            peer.kill()
            time.sleep(rng.uniform(*pause))
            peer.start()
            return True
        return kill

    def embedded(needle: str) -> Callable[[], bool]:
        def kill() -> bool:
            victim = serve.child(needle)
            if victim is not None:
                victim.kill()
            return victim is not None
        return kill

    return {
        "serve": restarted(serve, (0.5, 3.0)),
        "worker": restarted(worker, (0.5, 3.0)) if worker else embedded("celery"),
        "redis": restarted(redis, (0.5, 3.0)) if redis else embedded("redis-server"),
        "pacs": restarted(pacs, (0.5, 5.0)),
    }


def kill_schedule(kill: dict[str, Callable[[], bool]], rng: random.Random, every: float, stopping: threading.Event,
                  kills: list[tuple[float, str]]) -> None:
    """SIGKILL one part about every ``every`` seconds (exponential gaps) until ``stopping`` is set."""
    while not stopping.wait(rng.expovariate(1.0 / every)):
        part = rng.choice(PARTS)
        at = time.time()
        if kill[part]():
            kills.append((at, part))


# ------------------------------------------------------------------------------------------ counting
_headers: dict[tuple[str, int], tuple[str, str, frozenset[str]] | None] = {}


def header(path: Path) -> tuple[str, str, frozenset[str]] | None:
    """(SOP Instance UID, SOP Class UID, referenced SOP Instance UIDs) of a received file, None when it
    cannot be read (the PACS was killed while writing it); cached by name and size."""
    key = (path.name, path.stat().st_size)
    if key not in _headers:
        try:
            ds = dcmread(path, stop_before_pixels=True)
            _headers[key] = (str(ds.SOPInstanceUID), str(ds.SOPClassUID), frozenset(referenced(ds)))
        except Exception:  # noqa: BLE001 - truncated by a kill
            _headers[key] = None
    return _headers[key]


def deliveries(folder: Path, sources: set[str]
               ) -> tuple[dict[str, list[tuple[str, float]]], dict[str, list[float]], int]:
    """Per source SOP UID: (SR SOP UID, arrival time) for each SR at the PACS; per result SOP UID: the
    arrival times of its copies; how many files cannot be read."""
    srs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    arrivals: dict[str, list[float]] = defaultdict(list)
    partial = 0
    for path in folder.iterdir():
        found = header(path) if path.is_file() else None
        if found is None:
            partial += path.is_file()
            continue
        sop_uid, sop_class, references = found
        arrivals[sop_uid].append(path.stat().st_mtime)
        if sop_class in SR_CLASSES:
            for source in references & sources:
                srs[source].append((sop_uid, path.stat().st_mtime))
    return srs, arrivals, partial


def referenced(ds) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in a dataset."""
    found = set()
    for element in ds.iterall():
        if element.keyword == "ReferencedSOPInstanceUID":
            found.add(str(element.value))
    return found


def report(studies: list[Study], sent: Sent, audit: AuditStore, received: Path, kills: list[tuple[float, str]]) -> int:
    sources = {uid for study in studies for uid in study.sop_uids}
    acknowledged = set(sent.acknowledged_at)
    analysed = Counter(e["sop_instance_uid"] for e in audit.events(kind="analysed"))
    srs, arrivals, partial = deliveries(received, sources)
    first_delivery = {uid: min(t for _, t in found) for uid, found in srs.items()}
    delivered = {uid for uid in acknowledged if uid in srs}
    second_sets = {uid for uid, found in srs.items() if len({sr for sr, _ in found}) > 1}
    resent = {uid: sorted(times)[1] for uid, times in arrivals.items() if len(times) > 1}
    # the likeliest cause of a second copy: the last kill before it arrived
    resent_after = Counter(max(((t, part) for t, part in kills if t <= second), default=(0, "none"))[1]
                           for second in resent.values())
    lost = acknowledged - delivered
    print(f"\nsent {len(sources)}  acknowledged {len(acknowledged)}  (never acknowledged after retries: "
          f"{len(sent.refused)})")
    print(f"analysed {len(acknowledged & set(analysed))} (images with two analysed rows: "
          f"{sum(1 for uid in acknowledged if analysed[uid] > 1)})")
    print(f"delivered {len(delivered)}  lost {len(lost)}")
    print(f"duplicated {len(second_sets) + len(resent)}: second result set {len(second_sets)}, "
          f"resent result objects {len(resent)} (same SOP Instance UID twice)  unreadable files at the PACS {partial}")
    print(f"\n{'part':8} {'kills':>5} {'in flight':>9} {'delivered':>9} {'lost':>5} {'2nd set':>7} {'resent':>6}")
    for part in PARTS:
        times = [t for t, name in kills if name == part]
        exposed = {uid for uid, acked in sent.acknowledged_at.items()
                   if any(acked <= t < first_delivery.get(uid, float("inf")) for t in times)}
        print(f"{part:8} {len(times):5d} {len(exposed):9d} {len(exposed & delivered):9d} {len(exposed & lost):5d} "
              f"{len(exposed & second_sets):7d} {resent_after[part]:6d}")
    return 1 if lost or second_sets else 0


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=20.0, help="mean seconds between kills")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for results after sending "
                        "(default 300 + 3 s per instance)")
    parser.add_argument("--broker", choices=("embedded", "external"), default="embedded",
                        help="serve's embedded Redis and worker, or a redis-server without persistence and a "
                             "`dermnode worker` started (and restarted) by this script")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the peers (finally below) on SIGTERM too
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="dermnode-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    studies = make_studies(work / "studies", args.instances, rng, args.data)
    print(f"{args.instances} instances in {len(studies)} studies; work folder {work}")
    pacs_port, node_port, redis_port = free_port(), free_port(), free_port()
    (work / "pacs").mkdir(parents=True, exist_ok=True)
    pacs = Peer([binary("storescp"), "--aetitle", "PACS", "--output-directory", str(work / "pacs"), "--promiscuous",
                 "+xa", "--unique-filenames", str(pacs_port)], work / "pacs.log", pacs_port, DCMTK_ENV)
    redis = worker = None
    broker_url = ""
    if args.broker == "external":
        (work / "redis").mkdir(exist_ok=True)
        redis = Peer([binary("redis-server"), "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                      "--appendonly", "no", "--dir", str(work / "redis")], work / "redis.log", redis_port)
        broker_url = f"redis://127.0.0.1:{redis_port}/0"
    env = node_environment(work / "node", node_port, f"PACS@127.0.0.1:{pacs_port}", broker_url)
    serve = Peer([sys.executable, "-m", "dermnode.cli", "serve"], work / "serve.log", node_port, env)
    if args.broker == "external":
        worker = Peer([sys.executable, "-m", "dermnode.cli", "worker"], work / "worker.log", None, env)
    for peer in (pacs, redis, serve, worker):
        if peer is not None:
            peer.start()
    sent, kills, stopping = Sent(), [], threading.Event()
    killer = threading.Thread(target=kill_schedule, args=(killers(serve, pacs, redis, worker, rng), rng,
                                                          args.kill_every, stopping, kills), daemon=True)
    started = time.monotonic()
    killer.start()
    try:
        send(studies, node_port, sent)
        print(f"sent in {time.monotonic() - started:.0f} s with {len(kills)} kills so far; waiting for the results")
        audit = AuditStore(f"sqlite:///{work / 'node' / 'dermnode.db'}")
        sources = {uid for study in studies for uid in study.sop_uids}
        timeout = args.timeout or 300 + 3 * args.instances
        deadline, kills_until = time.monotonic() + timeout, time.monotonic() + timeout / 2
        while time.monotonic() < deadline:
            if set(sent.acknowledged_at) <= set(deliveries(work / "pacs", sources)[0]):
                break
            if time.monotonic() > kills_until:
                stopping.set()  # leave the rest of the time to finish without disturbance
            time.sleep(5.0)
        stopping.set()
        killer.join(timeout=180)
        time.sleep(15.0)  # a few more reconciler and dispatcher passes: would anything come twice?
        print(f"finished after {time.monotonic() - started:.0f} s")
        return report(studies, sent, audit, work / "pacs", kills)
    finally:
        stopping.set()
        for peer in (serve, worker, redis, pacs):
            if peer is not None and peer.alive():
                stop(peer.process, timeout=60)


if __name__ == "__main__":
    sys.exit(main())
