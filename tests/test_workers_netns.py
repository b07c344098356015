"""The production stack with workers on "other hosts": every result arrives at the PACS once.

`dermnode serve` runs with redis-server as its broker and a throwaway PostgreSQL as its database;
two `dermnode worker` processes run in their own network namespaces (tests/netns_support.py), each
with its own empty home and no database URL, reaching the node only over veth links: the broker
and the node's HTTP worker endpoints (node_url, worker_token). Orthanc is the PACS. Studies go in
with dcmtk's storescu; the test checks that each image comes back to Orthanc as exactly one SEG
and one SR, that the workers wrote nothing to their homes, and that both workers were used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from netns_support import namespace
from peers import free_port, orthanc, redis_server, shared_data, stop, tool, wait_for_port
from pg_support import postgres_schema_url, postgres_server  # noqa: F401 - the fixture
from serve_process import end_serve, start_serve
from test_end_to_end import SEG, SR, pick_images, starter_models

pytestmark = pytest.mark.peers

TOKEN = "netns-worker-token"
BROKER_PASSWORD = "netns-broker-password"
STUDIES = 4  # of 2 images each


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("DERMNODE_")}


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> dict:
    deadline, body = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-4000:]
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"the node was not ready within {timeout:.0f} s: {body}\n{log.read_text()[-4000:]}")


def test_two_namespaced_stateless_workers_deliver_every_result_once(tmp_path: Path, postgres_server) -> None:
    data = shared_data()
    starter_models()
    storescu = tool("storescu")
    from dermnode.dicom_templates.image_conversion import dicomize_image

    studies = []
    images = pick_images(data)[: 2 * STUDIES]
    for n in range(STUDIES):
        files = []
        for path, image_id, metadata in images[2 * n: 2 * n + 2]:
            ds = dicomize_image(path, image_id, metadata)
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77{n}"
            target = tmp_path / "studies" / str(n) / f"{image_id}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            files.append(target)
        studies.append(files)

    schemas = postgres_schema_url(postgres_server)  # the schema lives while this generator does
    database_url = next(schemas)
    with closing(schemas), namespace("worker-1") as first, namespace("worker-2") as second, orthanc(tmp_path / "orthanc") as pacs, \
            redis_server(tmp_path / "redis", bind=("127.0.0.1", first.host_ip), password=BROKER_PASSWORD) as broker:
        # the second namespace reaches the node's address on the first link through its own link
        subprocess.run([*second.command(["ip", "route", "add", f"{first.host_ip}/32", "via", second.host_ip])],
                       check=True, timeout=10)
        broker_port = broker.rsplit(":", 1)[1].split("/")[0]
        dicom_port, http_port = free_port(), free_port()
        node_url = f"http://{first.host_ip}:{http_port}"
        env = _clean_env() | {
            "DERMNODE_HOME": str(tmp_path / "node"), "DERMNODE_PORT": str(dicom_port),
            "DERMNODE_BROKER_URL": broker, "DERMNODE_DATABASE_URL": database_url,
            "DERMNODE_HTTP_HOST": first.host_ip, "DERMNODE_HTTP_PORT": str(http_port),
            "DERMNODE_WORKER_TOKEN": TOKEN, "DERMNODE_DESTINATIONS": pacs.address,
            "DERMNODE_QUIET_SECONDS": "1", "DERMNODE_DISPATCH_POLL_SECONDS": "0.5",
            "DERMNODE_RETRY_BASE_SECONDS": "0.5"}
        serve_log = tmp_path / "serve.log"
        serve = start_serve(env, serve_log)
        workers, worker_logs = [], []
        try:
            wait_for_port(dicom_port, timeout=120, process=serve)
            for ns in (first, second):
                home = tmp_path / f"home-{ns.label}"
                worker_env = _clean_env() | {
                    "DERMNODE_HOME": str(home),
                    "DERMNODE_BROKER_URL": f"redis://:{BROKER_PASSWORD}@{first.host_ip}:{broker_port}/0",
                    "DERMNODE_NODE_URL": node_url, "DERMNODE_WORKER_TOKEN": TOKEN}
                worker_logs.append(tmp_path / f"{ns.label}.log")
                with worker_logs[-1].open("w") as log:
                    workers.append(ns.popen([sys.executable, "-m", "dermnode.cli", "worker"], env=worker_env,
                                            stdout=log, stderr=subprocess.STDOUT))
            ready = _wait_ready(node_url, serve, serve_log)
            assert len(ready.get("workers", [])) >= 2, ready

            for files in studies:
                sent = subprocess.run([storescu, "--required", "--propose-jpeg8", "-aet", "MODALITY", "-aec",
                                       "DERMNODE", "127.0.0.1", str(dicom_port), *map(str, files)],
                                      capture_output=True, text=True, timeout=120)
                assert sent.returncode == 0, sent.stderr

            expected = 2 * STUDIES
            deadline, classes = time.monotonic() + 600, []
            while time.monotonic() < deadline:
                classes = pacs.sop_classes()
                if classes.count(SR) >= expected and classes.count(SEG) >= expected:
                    break
                assert serve.poll() is None, serve_log.read_text()[-4000:]
                time.sleep(2)
            time.sleep(3)  # anything sent twice would arrive now
            classes = pacs.sop_classes()
            logs = "\n".join(path.read_text()[-3000:] for path in [serve_log, *worker_logs])
            assert classes.count(SR) == expected and classes.count(SEG) == expected, f"{classes}\n{logs}"
        finally:
            try:
                end_serve(serve)
            finally:
                for worker in workers:
                    stop(worker)

        references = [pacs.tag(iid, "0008,1115") for iid in pacs.get("/instances")
                      if pacs.tag(iid, "0008,0016") == SEG]
        assert len(references) == expected
        for ns in (first, second):
            home = tmp_path / f"home-{ns.label}"
            assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()], f"{ns.label} wrote to its home"
        done = [path.read_text().count("succeeded in") for path in worker_logs]
        assert sum(done) >= STUDIES and all(done), f"tasks per worker: {done}"
