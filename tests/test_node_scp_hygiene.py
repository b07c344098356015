"""SCP hygiene with real peers: stalled and oversized connections, bursts, limits, refusals and their
status codes, and no PHI in what the node logs or audits about refused input."""

from __future__ import annotations

import io
import logging
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import Dataset, dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, _config

from node_support import RecordingEnqueue, make_dataset, node_settings, running_node
from peers import tool

pytestmark = pytest.mark.peers
DMS = "1.2.840.10008.5.1.4.1.1.77.1.7"
SECRET = "SECRET^PATIENTNAME"


def _echo(settings, called_ae: str | None = None) -> tuple[int, float]:
    start = time.monotonic()
    result = subprocess.run([tool("echoscu"), "-to", "10", "-aec", called_ae or settings.ae_title, "127.0.0.1",
                             str(settings.port)], capture_output=True, text=True, timeout=30)
    return result.returncode, time.monotonic() - start


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the node closes ``sock`` (anything it sends is read and dropped), or None."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def _rss_mb() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def _reasons(node, expected: int = 1) -> list[str]:
    """The audited rejection reasons, once at least ``expected`` are there (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        reasons = [event["details"]["reason"] for event in node.audit.events(kind="association_rejected")]
        if len(reasons) >= expected or time.monotonic() > deadline:
            return reasons
        time.sleep(0.1)


def test_stalled_sockets_are_closed_and_echo_still_works(tmp_path: Path) -> None:
    # all peers here share 127.0.0.1: the per-peer limit is raised so that it is not what is tested
    settings = node_settings(tmp_path, network_timeout_seconds=2, acse_timeout_seconds=2, max_associations_per_peer=20)
    with running_node(settings, RecordingEnqueue()) as node:
        stalled = [socket.create_connection(("127.0.0.1", settings.port), timeout=5) for _ in range(10)]
        try:
            for sock in stalled:  # half an A-ASSOCIATE-RQ header: pynetdicom would wait for the rest for ever
                sock.sendall(b"\x01\x00\x00\x00")
            time.sleep(0.3)
            returncode, seconds = _echo(settings)
            assert returncode == 0 and seconds < 5, "C-ECHO answered while 10 sockets stall"
            closed = [_closed_within(sock, 10) for sock in stalled]
            assert all(after is not None and after < 4 for after in closed), closed
        finally:
            for sock in stalled:
                sock.close()
        assert sum("stalled mid-PDU" in reason for reason in _reasons(node, 10)) == 10


def test_a_connection_that_never_associates_is_closed_by_artim(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, acse_timeout_seconds=1)
    with running_node(settings, RecordingEnqueue()):
        with socket.create_connection(("127.0.0.1", settings.port), timeout=5) as sock:
            after = _closed_within(sock, 10)
        assert after is not None and after < 3


def test_burst_of_connect_and_close_does_not_block_echo(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)  # default limits and timeouts
    with running_node(settings, RecordingEnqueue()):
        for _ in range(20):
            socket.create_connection(("127.0.0.1", settings.port), timeout=5).close()
        time.sleep(0.2)
        returncode, seconds = _echo(settings)
        assert returncode == 0 and seconds < 3


def test_pdu_claiming_4_gb_is_aborted_without_buffering(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    with running_node(settings, RecordingEnqueue()) as node:
        before = _rss_mb()
        sent = 0
        with socket.create_connection(("127.0.0.1", settings.port), timeout=5) as sock:
            sock.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFF0))
            try:
                while sent < 256 * 2**20:
                    sock.sendall(bytes(2**20))
                    sent += 2**20
            except OSError:
                pass  # the node closed the connection
            assert _closed_within(sock, 5) is not None
        assert sent < 256 * 2**20, "the node read 256 MB of a PDU longer than its limit"
        assert _rss_mb() - before < 50
        assert any("longer than the limit" in reason for reason in _reasons(node))
        assert _echo(settings)[0] == 0


def test_wrong_called_ae_is_rejected_and_audited_with_that_reason(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    with running_node(settings, RecordingEnqueue()) as node:
        assert _echo(settings, called_ae="NOTDERMNODE")[0] != 0
        assert _reasons(node) == ["called AE title is not this node's"]
        rejected = node.audit.events(kind="association_rejected")
        assert rejected[0]["details"]["called_ae"] == "NOTDERMNODE"
        assert _echo(settings)[0] == 0


def test_per_peer_limit_refuses_and_audits(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, max_associations_per_peer=2)
    with running_node(settings, RecordingEnqueue()) as node:
        held = [socket.create_connection(("127.0.0.1", settings.port), timeout=5) for _ in range(2)]
        try:
            time.sleep(0.3)
            assert _echo(settings)[0] != 0
        finally:
            for sock in held:
                sock.close()
        assert any(reason.startswith("per-peer limit") for reason in _reasons(node))
        time.sleep(0.3)
        assert _echo(settings)[0] == 0, "a peer whose connections closed is served again"


# ----------------------------------------------------------------------------- C-STORE refusals


def _raw_file(dataset: bytes, sop_uid: str, syntax: str) -> bytes:
    """A DICOM file whose dataset part is exactly ``dataset`` (sent as it is)."""
    holder = Dataset()
    holder.file_meta = FileMetaDataset()
    holder.file_meta.MediaStorageSOPClassUID, holder.file_meta.MediaStorageSOPInstanceUID = DMS, sop_uid
    holder.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    dcmwrite(buffer, holder, enforce_file_format=True)
    return buffer.getvalue() + dataset


def _encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    return data[144 + struct.unpack("<I", data[140:144])[0]:]


def _store_raw(settings, files: list[Path]) -> list[int]:
    """C-STORE each file's dataset bytes unchanged (pynetdicom's chunked sending); the statuses."""
    ae = AE(ae_title="SCU")
    for syntax in (JPEGBaseline8Bit, ExplicitVRLittleEndian):
        ae.add_requested_context(DMS, syntax)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return statuses


def _cases(folder: Path) -> dict[str, tuple[Path, bool]]:
    """name -> (file, whether the node should accept it)."""
    cases: dict[str, tuple[bytes, str, str, bool]] = {}

    def add(name: str, ds: Dataset, accept: bool, data: bytes | None = None, syntax: str | None = None) -> None:
        cases[name] = (data if data is not None else _encoded(ds), str(ds.SOPInstanceUID),
                       syntax or str(ds.file_meta.TransferSyntaxUID), accept)

    def base(seed: int) -> Dataset:
        ds = make_dataset(folder / "src", f"case{seed}", seed=seed)
        ds.PatientName = SECRET
        return ds

    ds = base(1)
    data = _encoded(ds)
    rows = data.find(b"\x28\x00\x10\x00US\x02\x00")  # Rows (US): 19 bytes of a name cannot be numbers
    add("undecodable", ds, False, data[:rows] + b"\x28\x00\x10\x00US\x13\x00" + SECRET.encode() + b"!" + data[rows + 10 :])
    ds = base(2)
    del ds.SeriesInstanceUID
    add("no series UID", ds, False)
    ds = base(3)
    ds.StudyInstanceUID = SECRET
    add("patient name as study UID", ds, False)
    ds = base(4)
    ds.SpecificCharacterSet = "GARBAGE"
    add("unknown character set", ds, False)
    ds = base(5)
    value = SECRET.encode()  # Number of Frames (IS) holding a name, as it comes off the wire
    ds[0x00280008] = RawDataElement(Tag(0x00280008), "IS", len(value), value, 0, False, True)
    add("name in a number", ds, False)
    ds = base(6)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # JPEG bytes labelled native
    ds["PixelData"].is_undefined_length = False
    ds.PixelData = base(6).PixelData[16:-8]
    add("JPEG labelled native", ds, False)
    ds = base(7)
    ds.PixelData = bytes(ds.Rows * ds.Columns * 3)  # native bytes labelled JPEG
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the encoding JPEG Baseline also uses
    add("native labelled JPEG", ds, False, _encoded(ds), JPEGBaseline8Bit)
    ds = base(8)
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "AccessionNumber"):
        delattr(ds, keyword)
    add("no patient or study attributes", ds, True)
    ds = base(9)
    ds.PatientID = ds.PatientName = ds.StudyDate = ""
    add("empty patient attributes", ds, True)
    files = {}
    for name, (data, sop_uid, syntax, accept) in cases.items():
        path = folder / f"{name.replace(' ', '_')}.dcm"
        path.write_bytes(_raw_file(data, sop_uid, syntax))
        files[name] = (path, accept)
    return files


def test_refusals_are_0xc000_with_reasons_and_never_quote_phi(tmp_path: Path, caplog) -> None:
    settings = node_settings(tmp_path, quiet_seconds=60)
    cases = _cases(tmp_path / "cases")
    caplog.clear()  # making the cases made pydicom log about them: only the node's records count
    caplog.set_level(logging.INFO)
    with running_node(settings, RecordingEnqueue()) as node:
        statuses = dict(zip(cases, _store_raw(settings, [path for path, _ in cases.values()])))
        for name, (_, accept) in cases.items():
            if accept:
                assert statuses[name] == 0x0000, name
            else:
                assert statuses[name] & 0xF000 == 0xC000, f"{name}: 0x{statuses[name]:04X}"
        reasons = [e["details"]["reason"] for e in node.audit.events(kind="rejected")]
        assert len(reasons) == sum(not accept for _, accept in cases.values())
        assert any("cannot be decoded" in r for r in reasons) and any("cannot be interpreted" in r for r in reasons)
        assert any("Character Set" in r for r in reasons), reasons
        assert any("Series Instance UID" in r for r in reasons)
        assert len(list(settings.spool_dir.rglob("*.dcm"))) == 2
    assert "PATIENTNAME" not in caplog.text
    assert all("PATIENTNAME" not in reason for reason in reasons)



def test_association_limit_refuses_and_audits(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, max_associations=2)
    with running_node(settings, RecordingEnqueue()) as node:
        held = [socket.create_connection(("127.0.0.1", settings.port), timeout=5) for _ in range(2)]
        try:
            time.sleep(0.3)
            assert _echo(settings)[0] != 0
        finally:
            for sock in held:
                sock.close()
        assert any(reason.startswith("too many associations") for reason in _reasons(node))


def test_stalled_tls_handshakes_do_not_block_the_accept_loop(tmp_path: Path) -> None:
    """pynetdicom does the TLS handshake in its accept loop: one silent client would stop every other."""
    subprocess.run([tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.crt"], cwd=tmp_path, check=True,
                   capture_output=True)
    settings = node_settings(tmp_path, tls_certificate=tmp_path / "server.crt", tls_private_key=tmp_path / "server.key",
                             acse_timeout_seconds=2, network_timeout_seconds=2)
    with running_node(settings, RecordingEnqueue()):
        silent = [socket.create_connection(("127.0.0.1", settings.port), timeout=5) for _ in range(3)]
        try:
            silent[0].sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
            time.sleep(0.3)
            result = subprocess.run([tool("echoscu"), "+tla", "-ic", "-to", "10", "-aec", settings.ae_title,
                                     "127.0.0.1", str(settings.port)], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
            assert all(_closed_within(sock, 10) is not None for sock in silent)
        finally:
            for sock in silent:
                sock.close()
