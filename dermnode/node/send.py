"""A plain C-STORE SCU: send DICOM files (or every DICOM file under folders) to one destination.

Used by ``dermnode send`` and by the outbox dispatcher. A file counts as stored only on a success
status (0x0000) or a warning (0xB000, 0xB006, 0xB007: stored, per PS3.4).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dermnode.node.settings import Destination

log = logging.getLogger("dermnode.send")
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
MAX_CONTEXTS = 128
#: What pynetdicom logs at ERROR for each association request that fails (refused, rejected):
#: store_files tells the failure in its outcomes, and the outbox once per destination state change.
_ASSOCIATION_FAILURE_LINES = ("Association request failed", "TCP Initialisation Error", "Association Rejected",
                              "Result: Rejected", "Reason: ")


class _QuietAssociationFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ASSOCIATION_FAILURE_LINES)


for _name in ("pynetdicom.transport", "pynetdicom.acse"):
    logging.getLogger(_name).addFilter(_QuietAssociationFailures())


@dataclass
class StoreOutcome:
    path: Path
    sop_instance_uid: str | None
    status: int | None = None
    error: str | None = None

    @property
    def stored(self) -> bool:
        return self.status in STORED_STATUSES


@dataclass
class _Header:
    path: Path
    sop_class_uid: UID
    sop_instance_uid: str
    transfer_syntax: UID


def collect_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files given directly plus every file under given folders (hidden files skipped), sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return files


def _read_header(path: Path) -> _Header:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    return _Header(path, UID(ds.SOPClassUID), str(ds.SOPInstanceUID), UID(ds.file_meta.TransferSyntaxUID))


def _contexts(headers: list[_Header]) -> list[tuple[UID, list[UID]]]:
    pairs = sorted({(h.sop_class_uid, h.transfer_syntax) for h in headers})
    contexts = []
    for sop_class, syntax in pairs:
        syntaxes = [syntax] if syntax.is_compressed else list(dict.fromkeys([syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        contexts.append((sop_class, syntaxes))
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} SOP class / transfer syntax pairs; one association carries at most {MAX_CONTEXTS}")
    return contexts


def store_files(files: Iterable[Path], destination: Destination, calling_ae: str = "DERMNODE",
                timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
                on_outcome: Callable[[StoreOutcome], None] | None = None) -> list[StoreOutcome]:
    """C-STORE each file over one association (over TLS with ``ssl_context``); one outcome per file.

    ``on_outcome`` hears each outcome as soon as it is known (the outbox records "sent" right after
    each acknowledgement, so that a crash mid-association re-sends at most the file in flight)."""
    outcomes: list[StoreOutcome] = []

    def settle(outcome: StoreOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    headers: list[_Header] = []
    for path in files:
        try:
            headers.append(_read_header(Path(path)))
        except (InvalidDicomError, AttributeError, OSError) as exc:
            settle(StoreOutcome(Path(path), None, error=f"not a readable DICOM file: {exc}"))
    if not headers:
        return outcomes
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for sop_class, syntaxes in _contexts(headers):
        ae.add_requested_context(sop_class, syntaxes)
    tls_args = (ssl_context, destination.host) if ssl_context is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        reason = f"association with {destination} {'rejected' if assoc.is_rejected else 'failed'}"
        for header in headers:
            settle(StoreOutcome(header.path, header.sop_instance_uid, error=reason))
        return outcomes
    try:
        for header in headers:
            settle(_store_one(assoc, header))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def _store_one(assoc, header: _Header) -> StoreOutcome:  # noqa: ANN001 - pynetdicom Association
    outcome = StoreOutcome(header.path, header.sop_instance_uid)
    if not assoc.is_established:
        outcome.error = "association closed before this file was sent"
        return outcome
    try:
        reply = assoc.send_c_store(header.path)
    except (ValueError, RuntimeError, OSError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    if "Status" not in reply:
        outcome.error = "no reply (connection lost or timed out)"
        return outcome
    outcome.status = int(reply.Status)
    if not outcome.stored:
        comment = reply.get("ErrorComment", "")
        outcome.error = f"status 0x{outcome.status:04X}" + (f": {comment}" if comment else "")
    return outcome
