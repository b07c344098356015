"""End to end: 10 dicomized ISIC images sent with dcmtk storescu to `dermnode serve` (configured only by
DERMNODE_* variables, embedded queue, real starter models) come back to Orthanc as 10 SEG and 10 SR
(plus a KOS for every vetoed image), each clean under dciodvfy; `dermnode audit list` shows the 10
studies with their model versions.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dermnode.contract import PatientMetadata
from dermnode.models.model_card import STARTER_DIR
from peers import assert_dciodvfy_clean, free_port, orthanc, shared_data, tool, wait_for_port
from serve_process import end_serve, start_serve

pytestmark = pytest.mark.peers

SEG, SR, KOS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.59"
MODELS = ("segmentation", "classifier", "bcc_sk")
DIAGNOSES = ("NV", "MEL", "BCC", "BKL", "NV", "MEL", "BCC", "SCC", "DF", "VASC")


def starter_models() -> None:
    missing = [name for name in MODELS if not (STARTER_DIR / name / "model_card.json").is_file()]
    if missing:
        pytest.skip(f"no starter weights yet for {', '.join(missing)} (dermnode/models/starter/)")


def pick_images(data: Path) -> list[tuple[Path, str, PatientMetadata]]:
    """Ten 8-class images, two per common diagnosis and one per rarer one, with their metadata."""
    chosen, wanted = [], list(DIAGNOSES)
    with (data / "metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            path = data / row["collection"] / "images" / f"{row['image_id']}.jpg"
            if row["collection"] == "isic-8class" and row["diagnosis"] in wanted and path.is_file():
                wanted.remove(row["diagnosis"])
                age = row["age_approx"].strip()
                metadata = PatientMetadata(float(age) if age else None, row["sex"] or None,
                                           row["anatom_site_general"] or None)
                chosen.append((path, row["image_id"], metadata))
    assert len(chosen) == 10, f"only {len(chosen)} images found for {DIAGNOSES}"
    return chosen


def test_ten_studies_through_serve_come_back_to_orthanc(tmp_path: Path) -> None:
    data = shared_data()
    starter_models()
    storescu = tool("storescu")
    tool("dciodvfy")
    from dermnode.dicom_templates.image_conversion import dicomize_image

    files = []
    for path, image_id, metadata in pick_images(data):
        target = tmp_path / "studies" / f"{image_id}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        dicomize_image(path, image_id, metadata).save_as(target, enforce_file_format=True)
        files.append(target)

    with orthanc(tmp_path / "orthanc") as pacs:
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("DERMNODE_")}
        env.update(DERMNODE_HOME=str(tmp_path / "home"), DERMNODE_AE_TITLE="DERMNODE", DERMNODE_PORT=str(port),
                   DERMNODE_DESTINATIONS=pacs.address, DERMNODE_QUIET_SECONDS="1",
                   DERMNODE_DISPATCH_POLL_SECONDS="0.5", DERMNODE_RETRY_BASE_SECONDS="0.5",
                   DERMNODE_HTTP_PORT="0")
        serve = start_serve(env, tmp_path / "serve.log")
        try:
            wait_for_port(port, timeout=60, process=serve)
            sent = subprocess.run(
                [storescu, "--required", "--propose-jpeg8", "-aet", "MODALITY", "-aec", "DERMNODE", "127.0.0.1",
                 str(port), *map(str, files)], capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stderr

            deadline = time.monotonic() + 300
            classes: list[str] = []
            while time.monotonic() < deadline:
                classes = pacs.sop_classes()
                if classes.count(SR) >= 10 and classes.count(SEG) >= 10:
                    break
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-5000:]
                time.sleep(2)
            logs = (tmp_path / "serve.log").read_text()[-5000:]
            worker_log = tmp_path / "home" / "logs" / "worker.log"
            logs += worker_log.read_text()[-5000:] if worker_log.exists() else ""
            assert classes.count(SR) == 10 and classes.count(SEG) == 10, f"{classes}\n{logs}"

            audit = subprocess.run([sys.executable, "-m", "dermnode.cli", "audit", "list"], env=env,
                                   capture_output=True, text=True, timeout=60)
            assert audit.returncode == 0, audit.stderr
        finally:
            assert end_serve(serve) == 0

        # every object the node wrote passes dciodvfy; a KOS for each vetoed image, none otherwise
        results = tmp_path / "results"
        results.mkdir()
        kinds = {SEG: "seg", SR: "sr", KOS: "kos"}
        for iid in pacs.get("/instances"):
            sop_class = pacs.tag(iid, "0008,0016")
            if sop_class in kinds:
                path = results / f"{kinds[sop_class]}-{iid}.dcm"
                path.write_bytes(pacs.file(iid))
                assert_dciodvfy_clean(path)

    from dermnode.node.audit import AuditStore

    rows = AuditStore(f"sqlite:///{tmp_path / 'home' / 'dermnode.db'}").analysed_rows()
    assert len(rows) == 10 and {row["status"] for row in rows} == {"analysed"}
    assert classes.count(KOS) == sum(1 for row in rows if row["veto"])
    assert {row["sent_to"] for row in rows} == {pacs.address}
    study_lines = [line for line in audit.stdout.splitlines() if "1.2." in line or "2.25." in line]
    assert len(study_lines) == 10, audit.stdout
    assert all(row["study_uid"][:40] in audit.stdout for row in rows), audit.stdout
    names = {key[len("model_"):-len("_version")] for key in rows[0] if key.startswith("model_") and key.endswith("_version")}
    assert len(names) == 3, rows[0]
    for name in names:  # the models column may wrap between a name and its version
        version = rows[0][f"model_{name}_version"]
        assert version and name in audit.stdout and version in audit.stdout, audit.stdout
