"""The disk watermark (C-STORE 0xA700 below it, audited, logged once) and serve's rotating log file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dermnode.node.audit import AuditStore
from dermnode.node.disk import MIB
from node_support import RecordingEnqueue, make_study, node_settings, running_node, storescu
from peers import redis_server, tool, wait_for_port
from serve_process import end_serve, start_serve

pytestmark = pytest.mark.peers


def _above_free_space(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free // MIB + 1024


def test_below_the_watermark_nothing_is_acknowledged(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, disk_watermark_mb=_above_free_space(tmp_path / "home"))
    study_uid, files = make_study(tmp_path / "in", 2)
    enqueue = RecordingEnqueue()
    with running_node(settings, enqueue) as node:
        result = subprocess.run([tool("storescu"), "-v", "--required", "--propose-jpeg8", "-aec", settings.ae_title, "127.0.0.1",
                                 str(settings.port), str(files[0])], capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        assert "Refused: OutOfResources" in output, output
        assert storescu(settings, files[1:]).returncode == 0  # dcmtk exits 0 on a refused status
        assert node.spool.study_files(study_uid) == []
        refused = node.audit.events(study_uid, kind="rejected")
        assert len(refused) == 2 and all(e["details"]["status"] == "0xA700" for e in refused)
        assert "below the" in refused[0]["details"]["reason"] and "watermark" in refused[0]["details"]["reason"]
        assert not node.audit.events(study_uid, kind="received")
        # room again (the watermark lowered): the same instances are taken
        node.disk.watermark_mb = 1
        assert storescu(settings, files).returncode == 0
        assert len(node.spool.study_files(study_uid)) == 2


def test_serve_logs_to_a_rotating_file_with_the_watermark_once_and_no_secrets(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as broker_url:
        settings = node_settings(tmp_path, broker_url=broker_url)
        study_uid, files = make_study(tmp_path / "in", 2, prefix="PATIENTX")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DERMNODE_")}
        environment.update(DERMNODE_HOME=str(settings.home), DERMNODE_PORT=str(settings.port),
                           DERMNODE_BROKER_URL=broker_url, DERMNODE_HTTP_PORT="0",
                           DERMNODE_DISK_WATERMARK_MB=str(_above_free_space(settings.home)))
        stderr_log = tmp_path / "stderr.log"
        serve = start_serve(environment, stderr_log, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(settings.port, timeout=60, process=serve)
            storescu(settings, files[:1])
            storescu(settings, files[1:])
        finally:
            assert end_serve(serve) == 0
        log_file = settings.home / "logs" / "dermnode.log"
        text = log_file.read_text()
        assert "listening on" in text and "stopped" in text
        assert text.count("below the watermark") == 1, text
        assert text in stderr_log.read_text(), "the same lines on stderr"
        assert "PATIENTX" not in text, "no patient identifier in the log"
        assert len(AuditStore(settings.database_url).events(study_uid, kind="rejected")) == 2
