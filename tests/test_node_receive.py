"""The SCP with dcmtk as the sender: storing, echo, allow-list, negotiation, bad input, duplicates."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from node_support import RecordingEnqueue, make_dataset, make_study, node_settings, running_node, storescu, write
from peers import tool

pytestmark = pytest.mark.peers


def _echo(settings, calling_ae: str = "ECHOSCU") -> subprocess.CompletedProcess:
    return subprocess.run([tool("echoscu"), "-aet", calling_ae, "-aec", settings.ae_title, "127.0.0.1",
                           str(settings.port)], capture_output=True, text=True, timeout=30)


def test_study_is_spooled_audited_and_queued_once(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, quiet_seconds=0.5)
    study_uid, files = make_study(tmp_path / "in", 3)
    enqueue = RecordingEnqueue()
    with running_node(settings, enqueue) as node:
        assert _echo(settings).returncode == 0
        result = storescu(settings, files)
        assert result.returncode == 0, result.stderr
        spooled = node.spool.study_files(study_uid)
        assert len(spooled) == 3
        assert {dcmread(p).SOPInstanceUID for p in spooled} == {dcmread(f).SOPInstanceUID for f in files}
        received = node.audit.events(study_uid, kind="received")
        assert [e["details"]["calling_ae"] for e in received] == ["STORESCU"] * 3
        deadline = time.monotonic() + 10
        while not enqueue.calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(enqueue.calls) == 1 and enqueue.calls[0][0] == study_uid
        assert node.audit.events(study_uid, kind="queued")[0]["details"]["idempotency_key"] == enqueue.calls[0][1]
        # the same content again: a duplicate, kept once, never queued a second time
        assert storescu(settings, files[:1]).returncode == 0
        time.sleep(1.0)
        assert len(node.spool.study_files(study_uid)) == 3
        assert len(node.audit.events(study_uid, kind="duplicate")) == 1
        assert len(enqueue.calls) == 1


def test_unknown_calling_ae_is_rejected(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, allowed_calling_aes=["MODALITY", "PACS"])
    _, files = make_study(tmp_path / "in", 1)
    with running_node(settings, RecordingEnqueue()) as node:
        assert _echo(settings, "MODALITY").returncode == 0
        assert _echo(settings, "INTRUDER").returncode != 0
        result = storescu(settings, files, calling_ae="INTRUDER")
        assert result.returncode != 0
        assert node.spool.studies() == []
        rejected = node.audit.events(kind="association_rejected")
        assert rejected and rejected[0]["details"]["calling_ae"] == "INTRUDER"


def test_unsupported_sop_class_is_not_accepted(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    with running_node(settings, RecordingEnqueue()):
        ae = AE(ae_title="SCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.77.1.7", "1.2.840.10008.1.2.4.50")
        assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        try:
            assert assoc.is_established
            accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
            assert accepted == {"1.2.840.10008.5.1.4.1.1.77.1.7"}
            assert CTImageStorage in {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        finally:
            assoc.release()


def _bad_instances(folder: Path, study_uid: str) -> dict[str, Path]:
    """One file per kind of bad input, all in the given study."""
    def base(name: str, seed: int):
        return make_dataset(folder / "src", name, study_uid=study_uid, seed=seed)

    bad = {}
    ds = base("nopixels", 10)
    del ds.PixelData
    bad["no pixel data"] = ds
    for name, photometric, seed in (("mono", "MONOCHROME2", 11), ("palette", "PALETTE COLOR", 12)):
        ds = base(name, seed)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        del ds.PlanarConfiguration
        ds.PixelData = bytes(ds.Rows * ds.Columns)
        ds["PixelData"].VR = "OW" if photometric.startswith("PALETTE") else "OB"
        bad[name] = ds
    ds = base("truncated", 13)
    stream = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([stream[: len(stream) // 2]])
    bad["corrupt JPEG"] = ds
    ds = base("empty", 14)
    ds.Rows = ds.Columns = 0
    bad["0x0"] = ds
    ds = base("huge", 15)
    ds.Rows = ds.Columns = 60000
    bad["60000x60000"] = ds
    return {kind: write(ds, folder / f"{kind.replace(' ', '_')}.dcm") for kind, ds in bad.items()}


def test_bad_instances_are_refused_and_nothing_else_is_lost(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, quiet_seconds=60)
    study_uid, good = make_study(tmp_path / "in", 2)
    bad = _bad_instances(tmp_path / "bad", study_uid)
    with running_node(settings, RecordingEnqueue()) as node:
        storescu(settings, [good[0], *bad.values(), good[1]])
        assert len(node.spool.study_files(study_uid)) == 2, "both good instances of the study are kept"
        assert not list(settings.spool_dir.rglob("*.tmp")), "no half-written file in the spool"
        reasons = {e["sop_instance_uid"]: e["details"]["reason"] for e in node.audit.events(study_uid, kind="rejected")}
        for kind, path in bad.items():
            assert dcmread(path).SOPInstanceUID in reasons, f"{kind} was not refused"
        assert "truncated" in reasons[dcmread(bad["corrupt JPEG"]).SOPInstanceUID]
        assert _echo(settings).returncode == 0, "the SCP still answers"


def test_failure_status_when_the_spool_cannot_store(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    study_uid, files = make_study(tmp_path / "in", 1)
    with running_node(settings, RecordingEnqueue()) as node:
        (settings.spool_dir / study_uid).write_text("a file where the study folder should be")
        ae = AE(ae_title="SCU")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.77.1.7", "1.2.840.10008.1.2.4.50")
        assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        status = assoc.send_c_store(files[0])
        assoc.release()
        assert status.Status == 0xA700
        assert node.audit.events(study_uid, kind="error")[0]["details"]["reason"].startswith("cannot store")


def test_non_uid_study_is_refused(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    ds = make_dataset(tmp_path / "src", "x", study_uid="../../etc")
    path = write(ds, tmp_path / "evil.dcm")
    with running_node(settings, RecordingEnqueue()) as node:
        storescu(settings, [path])
        assert node.spool.studies() == []
        assert "not a valid DICOM UID" in node.audit.events(kind="rejected")[0]["details"]["reason"]
        assert generate_uid()  # the node still runs; a fresh instance would be accepted
