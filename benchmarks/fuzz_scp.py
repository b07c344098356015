"""Fuzz the SCP: malformed datasets and raw PDUs, valid instances interleaved, against a real node.

    .venv/bin/python benchmarks/fuzz_scp.py [--inputs 10000] [--seed 0] [--valid-every 10] [--json]

The node (``dermnode.node.serve.Node``: SCP, durable spool, audit database, assembler) runs in a
child process on a loopback port with a no-op enqueue, short timeouts (2 s) and roomy association
limits, so that the fuzzer's own concurrent connections are not refused. Inputs, drawn from
``--seed``:

- dataset mutations sent over C-STORE (the file's bytes as they are, not re-encoded): deleted or
  garbled elements, wrong VRs, wrong lengths, truncated datasets, a transfer syntax that does not
  match the encoding or the pixel data, truncated pixel data, odd character sets, odd image
  attributes, missing patient/study attributes (carried through, so they should be accepted);
- raw PDUs on their own sockets, a few at a time in background threads: garbage, truncated PDUs
  that then stall, length fields up to 4 GB, connections that never associate or close at once,
  associations that send a broken P-DATA.

Every ``--valid-every``-th input is a valid instance of a fresh study. A C-ECHO probes the node
every 250 inputs. The patient name of every input is a marker that must never reach the node's
log or its audit database. At the end it prints: crashes (node died, traceback in its log, or a
0x0110 "processing failure" answer), hangs (an input or probe with no answer within the bound),
refused, accepted, no answer (a C-STORE the node aborted), accepted-without-result (accepted files that do not decode with the worker's
``decode_rgb`` or lack a UID a result needs), lost valid (a valid instance not acknowledged or not
in the spool), PHI found in the log or audit, and the node's RSS and thread peaks.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

from dermnode.contract import PatientMetadata
from dermnode.dicom_templates.image_conversion import (
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    InvalidInstance,
    check_identity,
    decode_rgb,
    dicomize_image,
)
from dermnode.local_processes import free_port, stop, wait_for_port

MARKER = "SECRETPATIENTNAME"
AE_TITLE = "DERMNODE"
TIMEOUT = 2.0  # the node's acse and network timeouts
HANG_BOUND = 20.0  # seconds an input or probe may take before it counts as a hang
PROCESSING_FAILURE = 0x0110
_config.STORE_SEND_CHUNKED_DATASET = True  # send each file's dataset bytes as they are


# ------------------------------------------------------------------------------------- the node


def serve_node(home: Path, port: int) -> None:
    """Child process: a Node with a no-op enqueue until stdin closes."""
    import logging

    from dermnode.node.serve import Node, configure_logging
    from dermnode.node.settings import Settings

    settings = Settings(home=home, port=port, ae_title=AE_TITLE, quiet_seconds=3600,
                        acse_timeout_seconds=TIMEOUT, network_timeout_seconds=TIMEOUT,
                        max_associations=200, max_associations_per_peer=200)
    configure_logging("INFO", settings.log_dir)
    logging.getLogger("dermnode.assemble").setLevel(logging.WARNING)
    with Node(settings, lambda study_uid, key: "noop"):
        sys.stdin.read()


class NodeProcess:
    def __init__(self, root: Path) -> None:
        self.home, self.port, self.log = root / "node", free_port(), root / "node.log"
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(self.home), str(self.port)],
                                        stdin=subprocess.PIPE, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, process=self.process)
        self.peaks = {"rss_mb": 0.0, "threads": 0}
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._sample, daemon=True)
        self._monitor.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while not self._stop.wait(0.2):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
            except OSError:
                return
            self.peaks["rss_mb"] = max(self.peaks["rss_mb"], int(fields["VmRSS"].split()[0]) / 1024)
            self.peaks["threads"] = max(self.peaks["threads"], int(fields["Threads"]))

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self._stop.set()
        if self.alive():
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(self.process)


# ----------------------------------------------------------------------------------- the inputs


def base_instances(folder: Path) -> list[Dataset]:
    """Small valid instances: JPEG Baseline (dicomized), the same decoded as native and as RLE."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bases = []
    for i, size in enumerate(((64, 48), (40, 40), (96, 64))):
        path = folder / f"base{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        ds = dicomize_image(path, f"FUZZ{i}", PatientMetadata(age=50, sex="male", anatomic_site="anterior torso"))
        ds.PatientName = f"DOE^{MARKER}"
        bases.append(ds)
    native = _copy(bases[0])
    native.PixelData, native.PhotometricInterpretation = decode_rgb(bases[0]).tobytes(), "RGB"
    native["PixelData"].VR, native["PixelData"].is_undefined_length = "OB", False
    native.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        delattr(native, keyword)
    rle = _copy(native)
    rle.compress(RLELossless)
    implicit = _copy(native)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return [*bases, native, rle, implicit]


def _copy(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def fresh(ds: Dataset, study_uid: str | None = None) -> Dataset:
    """A copy with new SOP (and study) instance UIDs."""
    ds = _copy(ds)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    return ds


def encode(ds: Dataset) -> bytes:
    """The dataset's bytes in its file meta's transfer syntax, without the file meta."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    return data[_dataset_offset(data):]


def _dataset_offset(data: bytes) -> int:
    group_length = struct.unpack("<I", data[140:144])[0]  # (0002,0000) UL right after the preamble + DICM
    return 144 + group_length


def file_bytes(dataset: bytes, sop_class: str, sop_uid: str, syntax: str) -> bytes:
    """A DICOM file: the given (possibly broken) dataset bytes behind a well-formed file meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = syntax
    holder = Dataset()
    holder.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, holder, enforce_file_format=True)
    return buffer.getvalue() + dataset


_GARBLE_TARGETS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns",
                   "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames", "PatientAge",
                   "StudyDate", "SpecificCharacterSet", "PixelData", "AnatomicRegionSequence", "PlanarConfiguration")
_CARRIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "AccessionNumber")


def mutate(rng: random.Random, bases: list[Dataset]) -> tuple[str, bytes, str, str, str]:
    """One malformed input: (mutation name, dataset bytes, SOP class, SOP instance UID, declared syntax)."""
    ds = fresh(rng.choice(bases))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    kind = rng.choice(["delete", "garble", "carried", "charset", "attribute", "syntax", "pixels", "bytes",
                       "truncate", "length", "vr"])
    if kind == "delete":
        keyword = rng.choice(_GARBLE_TARGETS + _CARRIED)
        if keyword in ds:
            delattr(ds, keyword)
        kind += f" {keyword}"
    elif kind == "garble":
        keyword = rng.choice(_GARBLE_TARGETS)
        element = ds.data_element(keyword) if keyword in ds else None
        if element is not None:
            raw = rng.choice([MARKER.encode(), os.urandom(rng.randint(1, 40)), b"", b"\x00" * 3, b"-1", b"99999999"])
            ds[element.tag] = type(element)(element.tag, "UN", raw)
        kind += f" {keyword}"
    elif kind == "carried":
        for keyword in rng.sample(_CARRIED, rng.randint(1, len(_CARRIED))):
            if rng.random() < 0.5 and keyword in ds:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, "")
    elif kind == "charset":
        ds.SpecificCharacterSet = rng.choice(["GARBAGE", "ISO_IR 100", "ISO 2022 IR 87", "ISO_IR 192\\GARBAGE", ""])
        ds.StudyDescription = rng.choice(["Derm\xf6skopie", "皮膚", MARKER])
    elif kind == "attribute":
        keyword, value = rng.choice([("Rows", 0), ("Columns", 60000), ("SamplesPerPixel", 1), ("BitsAllocated", 16),
                                     ("NumberOfFrames", 2), ("PhotometricInterpretation", "MONOCHROME2"),
                                     ("SOPClassUID", CTImageStorage), ("StudyInstanceUID", "1.2.abc"),
                                     ("SeriesInstanceUID", "../../etc"), ("SOPInstanceUID", "1." + "2" * 70),
                                     ("Rows", 47), ("Columns", 65)])
        setattr(ds, keyword, value)
        kind += f" {keyword}={value}"
    elif kind == "syntax":
        syntax = rng.choice([s for s in SUPPORTED_TRANSFER_SYNTAXES if s != syntax])
        kind += f" {syntax}"
    elif kind == "pixels":
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            cut = rng.randint(1, max(1, len(frame) - 1))
            ds.PixelData = encapsulate([frame[:cut] if rng.random() < 0.7 else frame[:cut] + os.urandom(64)])
        else:
            ds.PixelData = ds.PixelData[: rng.randint(0, len(ds.PixelData) - 1)]
    data = encode(ds)
    sop_class, sop_uid = str(ds.get("SOPClassUID", "")), str(ds.file_meta.MediaStorageSOPInstanceUID)
    if kind == "bytes":  # random bytes changed anywhere
        data = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind in ("length", "vr"):  # an element's length or VR field, found by its tag
        keyword = rng.choice(_GARBLE_TARGETS)
        element = ds.data_element(keyword) if keyword in ds else None
        position = data.find(struct.pack("<HH", element.tag.group, element.tag.element)) if element else -1
        if position >= 0:
            data = bytearray(data)
            if kind == "vr" and syntax != ImplicitVRLittleEndian:
                data[position + 4 : position + 6] = rng.choice([b"SQ", b"OB", b"UN", b"US", b"ZZ", b"\x00\x00"])
            else:
                offset = 4 if syntax == ImplicitVRLittleEndian else 6
                data[position + offset : position + offset + 2] = struct.pack("<H", rng.randrange(65536))
            data = bytes(data)
        kind += f" {keyword}"
    return kind, data, sop_class if sop_class in SUPPORTED_SOP_CLASSES else rng.choice(list(SUPPORTED_SOP_CLASSES)), \
        sop_uid, syntax


# ------------------------------------------------------------------------------------ raw PDUs


def associate_rq(called: str = AE_TITLE, calling: str = "FUZZ") -> bytes:
    """A minimal A-ASSOCIATE-RQ proposing Verification with Implicit VR Little Endian."""
    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + context + item(0x50, item(0x51, struct.pack(">I", 16384))))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def raw_input(rng: random.Random) -> tuple[str, list[bytes], bool]:
    """(name, chunks to send, whether to stall after sending) for one raw-socket input."""
    rq = associate_rq()
    kind = rng.choice(["garbage", "truncated-stall", "huge-length", "no-association", "close-at-once",
                       "rq-garbage-body", "broken-pdata", "short-header-stall"])
    if kind == "garbage":
        return kind, [os.urandom(rng.randint(1, 4096))], False
    if kind == "truncated-stall":
        return kind, [rq[: rng.randint(7, len(rq) - 1)]], True
    if kind == "huge-length":
        return kind, [struct.pack(">BBI", rng.choice([1, 4]), 0, rng.choice([2**32 - 1, 2**31, 2**28])),
                      bytes(65536)], False
    if kind == "no-association":
        return kind, [], True
    if kind == "close-at-once":
        return kind, [], False
    if kind == "rq-garbage-body":
        return kind, [rq[:6] + os.urandom(len(rq) - 6)], False
    if kind == "broken-pdata":
        pdv = os.urandom(rng.randint(0, 200))
        return kind, [rq, struct.pack(">BBI", 4, 0, len(pdv) + rng.choice([0, 6, 100])) + pdv], rng.random() < 0.5
    return kind, [bytes([rng.choice([1, 4, 5, 7])]) + bytes(rng.randint(0, 4))], True


def send_raw(port: int, chunks: list[bytes], stall: bool) -> str:
    """'closed' when the node closes the connection within the bound, else 'hang'."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_BOUND) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            if not stall:
                sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + HANG_BOUND
            while time.monotonic() < deadline:
                if not sock.recv(65536):
                    return "closed"
        except TimeoutError:
            return "hang"
        except OSError:
            return "closed"  # reset by the node
    return "hang"


# ------------------------------------------------------------------------------------- sending


class Sender:
    """One association at a time to the node; reopened whenever the node ends one, and before the
    node's idle timeout could abort it (a race that is not the input's doing)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ae = AE(ae_title="FUZZ")
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = HANG_BOUND
        for sop_class in [*SUPPORTED_SOP_CLASSES, CTImageStorage]:
            for syntax in SUPPORTED_TRANSFER_SYNTAXES:
                self.ae.add_requested_context(sop_class, syntax)
        self.assoc = None
        self.last_used = 0.0

    def store(self, path: Path) -> int | None:
        """The C-STORE status, or None when no answer came (association aborted or timed out)."""
        if self.assoc is not None and time.monotonic() - self.last_used > TIMEOUT / 2:
            self.close()
        self.last_used = time.monotonic()
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title=AE_TITLE)
            if not self.assoc.is_established:
                self.assoc = None
                return None
        try:
            status = self.assoc.send_c_store(path)
        except (ValueError, RuntimeError):
            return -1  # the fuzzer could not send it (no matching context): not an input
        finally:
            self.last_used = time.monotonic()
        return int(status.Status) if "Status" in status else None

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


def echo(port: int) -> bool:
    ae = AE(ae_title="PROBE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = HANG_BOUND
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return "Status" in status and status.Status == 0


def result_ready(path: Path) -> bool:
    """Whether the worker could give this spooled file a result: it decodes and has its UIDs."""
    try:
        ds = dcmread(path)
        check_identity(ds)
        decode_rgb(ds)
    except (InvalidInstance, Exception):  # noqa: BLE001 - anything the worker would trip on
        return False
    return True


# ----------------------------------------------------------------------------------------- main


def run(inputs: int, seed: int, valid_every: int, time_limit: float, root: Path) -> dict:
    rng = random.Random(seed)
    bases = base_instances(root / "bases")
    node = NodeProcess(root)
    sender = Sender(node.port)
    pool = ThreadPoolExecutor(max_workers=8)
    raw_results: list = []
    counts: Counter = Counter()
    accepted: dict[str, str] = {}  # SOP Instance UID -> mutation
    no_answer: list[str] = []
    valid: dict[str, bool] = {}
    mutations: Counter = Counter()
    path = root / "input.dcm"
    start = time.monotonic()
    try:
        i = 0
        while counts["inputs"] < inputs and time.monotonic() - start < time_limit and node.alive():
            i += 1
            if i % 250 == 0 and not echo(node.port):
                counts["hangs"] += 1
            if valid_every and i % valid_every == 0:
                ds = fresh(rng.choice(bases))
                path.write_bytes(file_bytes(encode(ds), ds.SOPClassUID, ds.SOPInstanceUID,
                                            ds.file_meta.TransferSyntaxUID))
                valid[str(ds.SOPInstanceUID)] = sender.store(path) == 0
                continue
            if rng.random() < 0.15:
                name, chunks, stall = raw_input(rng)
                raw_results.append(pool.submit(send_raw, node.port, chunks, stall))
                mutations[f"raw {name}"] += 1
                counts["inputs"] += 1
                continue
            try:
                name, data, sop_class, sop_uid, syntax = mutate(rng, bases)
            except Exception:  # noqa: BLE001 - pydicom would not write this mutation: draw another
                continue
            path.write_bytes(file_bytes(data, sop_class, sop_uid, syntax))
            status = sender.store(path)
            if status == -1:
                continue
            counts["inputs"] += 1
            mutations[name.split(" ")[0]] += 1
            if status is None:
                no_answer.append(name)
            elif status == PROCESSING_FAILURE:
                counts["crashes"] += 1
            elif status == 0:
                counts["accepted"] += 1
                accepted[sop_uid] = name
            else:
                counts["refused"] += 1
        sender.close()
        for future in raw_results:
            counts["hangs" if future.result() == "hang" else "raw closed"] += 1
        if not echo(node.port):
            counts["hangs"] += 1
    finally:
        pool.shutdown(wait=True)
        crashed = not node.alive()
        node.close()
    spooled = {p.stem: p for p in (node.home / "spool").rglob("*.dcm")}
    log = node.log.read_text(errors="replace")
    without_result = [name for uid, name in accepted.items() if uid not in spooled or not result_ready(spooled[uid])]
    lines = log.splitlines()
    crash_lines = ["\n".join(lines[n : n + 12]) for n, line in enumerate(lines)
                   if "Exception in thread" in line or "unexpected error storing" in line]
    audit = b"".join(p.read_bytes() for p in node.home.glob("*.db*"))
    return {
        "inputs": counts["inputs"], "valid": len(valid), "seconds": round(time.monotonic() - start, 1),
        "crashes": counts["crashes"] + int(crashed) + len(crash_lines),
        "crash_samples": crash_lines[:3],
        "hangs": counts["hangs"], "no_answer": len(no_answer), "no_answer_samples": no_answer[:5],
        "refused": counts["refused"],
        "accepted": counts["accepted"], "raw_closed": counts["raw closed"],
        "accepted_without_result": len(without_result), "without_result_samples": without_result[:5],
        "lost_valid": sum(1 for uid, acknowledged in valid.items() if not acknowledged or uid not in spooled),
        "phi_in_log": log.count(MARKER), "phi_in_audit": audit.count(MARKER.encode()),
        "rss_peak_mb": round(node.peaks["rss_mb"], 1), "threads_peak": node.peaks["threads"],
        "mutations": dict(sorted(mutations.items())),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve_node(Path(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10000, help="malformed inputs (valid ones come on top)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid-every", type=int, default=10, help="every N-th input is a valid instance")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="stop sending after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # pydicom's warnings about the fuzzer's own malformed datasets
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="fuzz-scp-"))
    try:
        figures = run(args.inputs, args.seed, args.valid_every, args.time_limit, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        if not name.endswith("_samples") and name != "mutations":
            print(f"{name:>24}: {value}")
    for kind in ("crash", "no_answer", "without_result"):
        for sample in figures[f"{kind}_samples"]:
            print(f"{kind}:", sample)
    print("inputs by mutation:", ", ".join(f"{k} {v}" for k, v in figures["mutations"].items()))


if __name__ == "__main__":
    main()
