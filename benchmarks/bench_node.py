"""End to end: studies from dcmtk storescu through `dermnode serve` and its workers to a storescp PACS.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_node.py [--studies 20] [--workers 1|2]
        [--stack embedded|production] [--rate 1.0] [--quiet 2] [--data ../shared/data]

Makes ``--studies`` studies of 1-5 Dermoscopic Photography instances from the ISIC 2018 task 1
images (512x512) with the repository's ``dicomize_image`` (in a temporary folder, never in the
repository), and starts the stack:

* ``embedded``: serve with its private Redis and local worker (one worker);
* ``production``: a redis-server with an append-only file (fsync every second), a private
  PostgreSQL (``dermnode.local_postgres``, fsync on), serve, and ``--workers`` stateless
  `dermnode worker` processes (their own empty homes, no database; instances and results go
  through serve's worker endpoints).

After one warm-up study per worker (models load on the first study), the studies go one storescu
association each at ``--rate`` studies per second (0: back to back) to serve, which sends SEG, SR
(and KOS) to a storescp PACS. Prints images per second (first study sent to last SR arrived),
latency from each study's last acknowledged instance to its last SR at the PACS minus the quiet
period (p50, p95), CPU seconds per image of the workers, serve and the servers (psutil), the
workers' seconds per image by stage (from the audit rows), and the C-STORE intake rate of serve
beside a reference storescp for one burst of the same instances (one study, so that nothing is
analysed while it lasts) in the same run.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
from pydicom.uid import generate_uid
from tqdm import tqdm

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import dicomize_image
from dermnode.local_postgres import postgres_cluster
from dermnode.local_processes import free_port, stop, wait_for_port
from dermnode.node.audit import AuditStore
from soak import DCMTK_ENV, SR_CLASSES, Peer, binary, header, node_environment

REPO = Path(__file__).resolve().parents[1]
IMAGE_POOL = 200
STAGE_ORDER = ("input_gate", "segmentation", "radiomics", "classifier", "bcc_sk")


@dataclass
class Study:
    uid: str
    files: list[Path]
    sop_uids: list[str]
    sent_at: float = 0.0
    acknowledged_at: float = 0.0


@dataclass
class Stack:
    node_port: int
    pacs_dir: Path
    reference_port: int
    database_url: str
    watched: dict[str, list[psutil.Process]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ input
def make_studies(folder: Path, count: int, rng: random.Random, data: Path, prefix: str) -> list[Study]:
    """``count`` studies of 1-5 instances, fresh UIDs, images drawn from the ISIC 2018 task 1 set."""
    images = sorted((data / "isic2018-task1" / "images").glob("ISIC_*.jpg"))[:IMAGE_POOL]
    if not images:
        sys.exit(f"no ISIC images under {data}/isic2018-task1/images (pass --data)")
    folder.mkdir(parents=True, exist_ok=True)
    bases: dict[Path, object] = {}
    studies = []
    for number in range(count):
        study = Study(generate_uid(), [], [])
        series_uid = generate_uid()
        for n in range(rng.randint(1, 5)):
            path = rng.choice(images)
            if path not in bases:
                bases[path] = dicomize_image(path, path.stem, PatientMetadata(55.0, "female", "back"))
            ds = copy.deepcopy(bases[path])
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study.uid, series_uid, n + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID = ds.AccessionNumber = f"{prefix}{number}"
            out = folder / f"{prefix}{number:04d}-{n}.dcm"
            ds.save_as(out, enforce_file_format=True)
            study.files.append(out)
            study.sop_uids.append(str(ds.SOPInstanceUID))
        studies.append(study)
    return studies


def as_one_study(studies: list[Study], folder: Path) -> list[Path]:
    """Copies of every instance in one new study (so serve analyses nothing while the burst lasts)."""
    from pydicom import dcmread

    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for n, path in enumerate(p for study in studies for p in study.files):
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"burst-{n:05d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


# ------------------------------------------------------------------------------------------ stack
def worker_environment(node_env: dict[str, str], home: Path) -> dict[str, str]:
    """What a stateless `dermnode worker` gets: the broker, the node's address and the worker token,
    its own empty home, and no database."""
    env = {key: value for key, value in node_env.items() if not key.startswith("DERMNODE_")}
    env.update(DERMNODE_HOME=str(home), DERMNODE_BROKER_URL=node_env["DERMNODE_BROKER_URL"],
               DERMNODE_NODE_URL=f"http://127.0.0.1:{node_env['DERMNODE_HTTP_PORT']}",
               DERMNODE_WORKER_TOKEN=node_env["DERMNODE_WORKER_TOKEN"])
    return env


def _process(popen: subprocess.Popen | None) -> list[psutil.Process]:
    return [] if popen is None else [psutil.Process(popen.pid)]


@contextmanager
def redis_server(work: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server as in production: append-only file, fsync every second."""
    port = free_port()
    (work / "redis").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([binary("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(work / "redis")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process=process)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        stop(process)


@contextmanager
def stack(work: Path, kind: str, workers: int, quiet: float) -> Iterator[Stack]:
    with ExitStack() as stack_exit:
        pacs_port, reference_port, node_port = free_port(), free_port(), free_port()
        peers = {
            "pacs": Peer([binary("storescp"), "--aetitle", "PACS", "--output-directory", str(work / "pacs"),
                          "--promiscuous", "+xa", "--unique-filenames", str(pacs_port)], work / "pacs.log",
                         pacs_port, DCMTK_ENV),
            "reference": Peer([binary("storescp"), "--aetitle", "REFERENCE", "--output-directory",
                               str(work / "reference"), "--fork", "+xa", str(reference_port)],
                              work / "reference.log", reference_port, DCMTK_ENV),
        }
        for folder in ("pacs", "reference"):
            (work / folder).mkdir(parents=True, exist_ok=True)
        broker_url, database_url, servers = "", f"sqlite:///{work / 'node' / 'dermnode.db'}", []
        if kind == "production":
            broker_url, redis = stack_exit.enter_context(redis_server(work))
            cluster = stack_exit.enter_context(postgres_cluster(fsync=True))
            database_url = cluster.url
            servers = [psutil.Process(redis.pid)] + [p for p in psutil.process_iter(["cmdline"])
                                                     if str(cluster.directory) in " ".join(p.info["cmdline"] or [])]
        env = node_environment(work / "node", node_port, f"PACS@127.0.0.1:{pacs_port}", broker_url)
        env.update(DERMNODE_QUIET_SECONDS=str(quiet), DERMNODE_HTTP_PORT=str(free_port()),
                   DERMNODE_WORKER_TOKEN=secrets.token_urlsafe(24), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
        if kind == "production":
            env["DERMNODE_DATABASE_URL"] = database_url
        peers["serve"] = Peer([sys.executable, "-m", "dermnode.cli", "serve"], work / "serve.log", node_port, env)
        for n in range(workers if kind == "production" else 0):
            peers[f"worker{n + 1}"] = Peer([sys.executable, "-m", "dermnode.cli", "worker"], work / f"worker{n + 1}.log",
                                           None, worker_environment(env, work / f"worker{n + 1}-home"))
        try:
            for peer in peers.values():
                peer.start()
            watched = {"redis+postgres": servers, "serve": _process(peers["serve"].process),
                       "workers": [p for name, peer in peers.items() if name.startswith("worker")
                                   for p in _process(peer.process)]}
            yield Stack(node_port, work / "pacs", reference_port, database_url, watched)
        finally:
            for peer in reversed(peers.values()):
                if peer.alive():
                    stop(peer.process, timeout=30)


def cpu_seconds(processes: list[psutil.Process], recursive: bool = True) -> dict[int, float]:
    """User + system CPU seconds of each process (and its descendants), by pid."""
    seconds: dict[int, float] = {}
    for root in processes:
        try:
            for process in [root, *(root.children(recursive=True) if recursive else [])]:
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        except psutil.Error:
            continue
    return seconds


def split_embedded(watched: dict[str, list[psutil.Process]]) -> dict[str, list[psutil.Process]]:
    """With the embedded queue the worker and Redis are serve's children: count them apart."""
    if watched["workers"] or not watched["serve"]:
        return watched
    children = watched["serve"][0].children()
    def matching(needle: str) -> list[psutil.Process]:
        return [c for c in children if needle in " ".join(c.cmdline())]
    return {"redis+postgres": matching("redis"), "serve": watched["serve"], "workers": matching("celery")
            or matching("worker")}


# ------------------------------------------------------------------------------------------ sending
def store(port: int, files: list[Path], aet: str = "BENCH", called: str = "DERMNODE") -> None:
    result = subprocess.run([binary("storescu"), "--propose-jpeg8", "--required", "-aet", aet, "-aec", called,
                             "127.0.0.1", str(port), *map(str, files)], capture_output=True, env=DCMTK_ENV, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed: {result.stderr.decode(errors='replace')[-500:]}")


def send_paced(studies: list[Study], port: int, rate: float) -> None:
    start = time.monotonic()
    for n, study in enumerate(tqdm(studies, desc="sending studies", unit="study")):
        if rate > 0:
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
        study.sent_at = time.time()
        store(port, study.files)
        study.acknowledged_at = time.time()


def wait_for_srs(pacs: Path, studies: list[Study], timeout: float) -> dict[str, float]:
    """Arrival time (file mtime) of the first SR referencing each source instance; bounded by ``timeout``."""
    sources = {uid for study in studies for uid in study.sop_uids}
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    with tqdm(total=len(sources), desc="results at the PACS", unit="image") as progress:
        while len(arrived) < len(sources) and time.monotonic() < deadline:
            for path in pacs.iterdir():
                found = header(path)
                if found is None or found[1] not in SR_CLASSES:
                    continue
                for source in (found[2] & sources) - arrived.keys():
                    arrived[source] = path.stat().st_mtime
                    progress.update(1)
            time.sleep(0.5)
    return arrived


def intake_rate(port: int, files: list[Path], called: str) -> float:
    start = time.perf_counter()
    store(port, files, called=called)
    return len(files) / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ report
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def stage_seconds(database_url: str, sources: set[str]) -> dict[str, float]:
    """Mean seconds per image and stage, from the workers' audit rows of these instances."""
    store_ = AuditStore(database_url)
    try:
        rows = [row for row in store_.analysed_rows() if row.get("sop_instance_uid") in sources]
    finally:
        store_.close()
    stages = [key for key in (rows[0] if rows else {}) if key.startswith("seconds_")]
    ordered = sorted(stages, key=lambda s: STAGE_ORDER.index(s[8:]) if s[8:] in STAGE_ORDER else len(STAGE_ORDER))
    return {s[8:]: statistics.fmean(float(r[s] or 0.0) for r in rows) for s in ordered} | {"images": len(rows)}


def report(args: argparse.Namespace, studies: list[Study], arrived: dict[str, float], cpu: dict[str, float],
           stages: dict[str, float], intake: dict[str, float]) -> int:
    images = sum(len(s.files) for s in studies)
    done = [s for s in studies if all(uid in arrived for uid in s.sop_uids)]
    latencies = [max(arrived[uid] for uid in s.sop_uids) - s.acknowledged_at - args.quiet for s in done]
    span = max(arrived.values(), default=float("nan")) - min(s.sent_at for s in studies)
    print(f"\nstack {args.stack}, {args.workers} worker(s), {len(studies)} studies / {images} images at "
          f"{args.rate or 'max'} studies/s, quiet period {args.quiet} s, {os.cpu_count()} CPUs")
    print(f"results: {len(arrived)} of {images} images have their SR at the PACS ({len(done)} complete studies)")
    print(f"throughput: {len(arrived) / span:.2f} images/s (first study sent to last SR arrived, {span:.1f} s)")
    print(f"latency, last instance acknowledged -> last SR at the PACS, minus the quiet period: "
          f"p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
          f"max {max(latencies, default=float('nan')):.2f} s")
    print("CPU seconds per image (psutil, user+system, after the warm-up): "
          + ", ".join(f"{name} {seconds / max(1, len(arrived)):.3f}" for name, seconds in cpu.items()))
    analysed = int(stages.pop("images", 0))
    print(f"worker seconds per image by stage (audit, wall time in the worker, {analysed} images): "
          + ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in stages.items())
          + f"; sum {sum(stages.values()):.3f}")
    print(f"C-STORE intake, one association of {intake['files']:.0f} instances: serve {intake['serve']:.1f}/s, "
          f"dcmtk storescp {intake['storescp']:.1f}/s")
    return 0 if len(arrived) == images else 1


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--stack", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--rate", type=float, default=1.0, help="studies per second (0: back to back)")
    parser.add_argument("--quiet", type=float, default=2.0, help="the node's quiet_seconds")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for results "
                        "(default 120 + 5 s per image)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    if args.stack == "embedded" and args.workers != 1:
        parser.error("the embedded stack runs one worker (serve's own); use --stack production for 2")
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="dermnode-bench-"))
    warmup = make_studies(work / "warmup", args.workers, rng, args.data, "WARM")
    for study in warmup:  # one image each: just enough to load every worker's models
        del study.files[1:], study.sop_uids[1:]
    studies = make_studies(work / "studies", args.studies, rng, args.data, "BENCH")
    burst = as_one_study(studies, work / "burst")
    print(f"{sum(len(s.files) for s in studies)} instances in {len(studies)} studies; work folder {work}")
    with stack(work, args.stack, args.workers, args.quiet) as running:
        for study in warmup:
            store(running.node_port, study.files)
            study.acknowledged_at = time.time()
        if len(wait_for_srs(running.pacs_dir, warmup, 600)) < len(warmup):
            sys.exit(f"the warm-up study got no result within 600 s: see {work}/serve.log")
        watched = split_embedded(running.watched)  # serve's own CPU apart from its embedded children
        before = {name: cpu_seconds(processes, name != "serve") for name, processes in watched.items()}
        send_paced(studies, running.node_port, args.rate)
        arrived = wait_for_srs(running.pacs_dir, studies, args.timeout or 120 + 5 * len(burst))
        after = {name: cpu_seconds(processes, name != "serve") for name, processes in watched.items()}
        cpu = {name: sum(after[name].values()) - sum(before[name].get(pid, 0.0) for pid in after[name])
               for name in watched}
        sources = {uid for study in studies for uid in study.sop_uids}
        stages = stage_seconds(running.database_url, sources)
        intake = {"files": len(burst), "storescp": intake_rate(running.reference_port, burst, "REFERENCE"),
                  "serve": intake_rate(running.node_port, burst, "DERMNODE")}
    return report(args, studies, arrived, cpu, stages, intake)


if __name__ == "__main__":
    sys.exit(main())
