"""The SCP: answers C-ECHO and C-STORE, spools instances durably, audits every arrival.

The handlers are short and never raise: an instance is checked (header only), written to the
spool (fsync + rename) and only then acknowledged with success; anything that cannot be stored
gets a failure status with the reason in ErrorComment, and nothing else is lost.
"""

from __future__ import annotations

import logging
from typing import Callable

from pydicom import Dataset
from pydicom.encaps import generate_fragments
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dermnode.dicom_templates.image_conversion import (
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    InvalidInstance,
    check_incoming,
)
from dermnode.node.audit import AuditStore
from dermnode.node.settings import Settings
from dermnode.node.spool import InvalidUID, Spool
from dermnode.node.tls import server_context

log = logging.getLogger("dermnode.receive")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
_JPEG_FAMILY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}


def failure(status: int, reason: str) -> Dataset:
    reply = Dataset()
    reply.Status = status
    reply.ErrorComment = reason[:64]
    return reply


def check_pixel_stream(ds: Dataset) -> None:
    """A JPEG stream must end with an end-of-image marker: refuse truncated JPEG data at C-STORE.

    check_incoming has looked at the stream's start (SOI, frame size); damage inside the stream is
    found when the worker decodes the image and is recorded as a failed analysis.
    """
    if ds.file_meta.TransferSyntaxUID not in _JPEG_FAMILY or "PixelData" not in ds:
        return
    try:
        last = b""
        for last in generate_fragments(ds.PixelData):
            pass
    except Exception as exc:  # noqa: BLE001 - any parse error means the encapsulation is broken
        raise InvalidInstance(f"encapsulated pixel data is malformed: {exc}") from exc
    if not bytes(last).rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InvalidInstance("corrupt JPEG: the stream is truncated (no end-of-image marker)")


class Receiver:
    """The event handlers of the SCP; ``on_instance(study_uid)`` is told of every new instance."""

    def __init__(self, spool: Spool, audit: AuditStore, on_instance: Callable[[str], None]) -> None:
        self.spool = spool
        self.audit = audit
        self.on_instance = on_instance

    @property
    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_STORE, self.on_store), (evt.EVT_REJECTED, self.on_rejected)]

    def on_store(self, event: evt.Event) -> int | Dataset:
        calling_ae = event.assoc.requestor.ae_title
        study_uid = sop_uid = None
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            study_uid = str(ds.get("StudyInstanceUID", "")) or None
            sop_uid = str(ds.get("SOPInstanceUID", "")) or None
            check_incoming(ds)
            check_pixel_stream(ds)
            _, is_new = self.spool.store_encoded(study_uid, sop_uid, event.encoded_dataset())
        except (InvalidInstance, InvalidUID) as exc:
            log.warning("refused instance %s from %s: %s", sop_uid, calling_ae, exc)
            self._audit("rejected", study_uid, sop_uid, calling_ae=calling_ae, reason=str(exc))
            return failure(CANNOT_UNDERSTAND, str(exc))
        except OSError as exc:
            log.error("cannot spool instance %s: %s", sop_uid, exc)
            self._audit("error", study_uid, sop_uid, calling_ae=calling_ae, reason=f"cannot store: {exc}")
            return failure(OUT_OF_RESOURCES, f"cannot store: {exc}")
        except Exception as exc:  # noqa: BLE001 - a handler must answer, never raise
            log.exception("unexpected error storing %s", sop_uid)
            self._audit("error", study_uid, sop_uid, calling_ae=calling_ae, reason=f"{type(exc).__name__}: {exc}")
            return failure(PROCESSING_FAILURE, f"{type(exc).__name__}: {exc}")
        if is_new:
            self._audit("received", study_uid, sop_uid, calling_ae=calling_ae,
                        series_uid=str(ds.get("SeriesInstanceUID", "")), sop_class_uid=str(ds.SOPClassUID))
            self.on_instance(study_uid)
        else:
            log.info("duplicate instance %s from %s kept as first received", sop_uid, calling_ae)
            self._audit("duplicate", study_uid, sop_uid, calling_ae=calling_ae)
        return SUCCESS

    def on_rejected(self, event: evt.Event) -> None:
        calling_ae = event.assoc.requestor.ae_title
        log.warning("association from %s (%s) rejected", calling_ae, event.assoc.requestor.address)
        self._audit("association_rejected", None, None, calling_ae=calling_ae,
                    address=event.assoc.requestor.address, reason="calling AE title not allowed")

    def _audit(self, kind: str, study_uid: str | None, sop_uid: str | None, **details: object) -> None:
        try:
            self.audit.record(kind, study_uid, sop_uid, **details)
        except Exception:  # noqa: BLE001 - the audit database being down must not crash the SCP
            log.exception("cannot write audit event %s for %s", kind, sop_uid)


def make_ae(settings: Settings) -> AE:
    """An AE with the supported photographic SOP classes (all transfer syntaxes) plus Verification."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = 0
    for sop_class in SUPPORTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(SUPPORTED_TRANSFER_SYNTAXES))
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(settings.allowed_calling_aes)
    return ae


def start_scp(settings: Settings, receiver: Receiver) -> ThreadedAssociationServer:
    """Start listening on settings.host:settings.port in background threads."""
    ae = make_ae(settings)
    server = ae.start_server((settings.host, settings.port), block=False, evt_handlers=receiver.handlers,
                             ssl_context=server_context(settings))
    log.info("%s listening on %s:%d%s (calling AEs allowed: %s)", settings.ae_title, settings.host, settings.port,
             " with TLS" if settings.tls_certificate else "",
             ", ".join(settings.allowed_calling_aes) or "any")
    return server
