"""The SCP: answers C-ECHO and C-STORE, spools instances durably, audits every arrival.

The handlers are short and never raise: an instance is decoded and checked (header, identity,
pixel data decoded with the worker's decoder), written to the spool (fsync + rename) and only
then acknowledged with success; anything the node cannot use gets a 0xC000-class status, a
storage problem 0xA700, each with the reason in ErrorComment, and nothing else is lost. Below the
disk watermark (disk.py) every C-STORE is answered 0xA700 before it is stored. Reasons
and log lines name the SOP Instance UID and the problem, never element values (they may hold PHI).
Connection limits and timeouts live in scp_limits.py.
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dermnode.dicom_templates.image_conversion import (
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    InvalidInstance,
    check_decodable,
    check_identity,
    check_incoming,
    patient_metadata,
    pixel_spacing_mm,
    valid_uid,
)
from dermnode.dicom_templates.uids import InvalidUID
from dermnode.node.audit import AuditStore
from dermnode.node.disk import DiskWatermark
from dermnode.node.scp_limits import Limits, start_limited_server
from dermnode.node.settings import Settings
from dermnode.node.spool import Spool
from dermnode.node.tls import server_context

log = logging.getLogger("dermnode.receive")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
#: A-ASSOCIATE-RJ (source, reason) -> the reason in words (PS3.8 9.3.4).
REJECT_REASONS = {
    (0x01, 0x01): "no reason given",
    (0x01, 0x02): "application context name not supported",
    (0x01, 0x03): "calling AE title not allowed",
    (0x01, 0x07): "called AE title is not this node's",
    (0x02, 0x01): "user identity not accepted",
    (0x02, 0x02): "protocol version not supported",
    (0x03, 0x01): "temporary congestion",
    (0x03, 0x02): "too many associations",
}


def failure(status: int, reason: str) -> Dataset:
    reply = Dataset()
    reply.Status = status
    reply.ErrorComment = reason[:64]
    return reply


def decoded_instance(event: evt.Event) -> Dataset:
    """The C-STORE dataset with every element decoded; InvalidInstance (no values quoted) if it cannot be."""
    try:
        ds = event.dataset
        ds.file_meta = event.file_meta
        for _ in ds.iterall():
            pass
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, the dataset is not understood
        raise InvalidInstance(f"the dataset cannot be decoded ({type(exc).__name__})") from None
    return ds


def check_instance(ds: Dataset, request: Dataset) -> None:
    """Refuse (InvalidInstance, with a reason) a decoded instance the node cannot give a result for."""
    try:
        check_incoming(ds)
        check_identity(ds)
        if str(ds.SOPInstanceUID).strip() != str(request.AffectedSOPInstanceUID).strip():
            raise InvalidInstance("the SOP Instance UID differs from the C-STORE request's")
        if str(ds.SOPClassUID).strip() != str(request.AffectedSOPClassUID).strip():
            raise InvalidInstance("the SOP Class UID differs from the C-STORE request's")
        check_decodable(ds)
        patient_metadata(ds)  # the header values the worker reads must be readable
        pixel_spacing_mm(ds)
    except InvalidInstance:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a number element holding text
        raise InvalidInstance(f"an attribute cannot be interpreted ({type(exc).__name__})") from None


class Receiver:
    """The event handlers of the SCP; ``on_instance(study_uid)`` is told of every new instance."""

    def __init__(self, spool: Spool, audit: AuditStore, on_instance: Callable[[str], None],
                 disk: DiskWatermark | None = None) -> None:
        self.spool = spool
        self.audit = audit
        self.on_instance = on_instance
        self.disk = disk

    @property
    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_STORE, self.on_store), (evt.EVT_REJECTED, self.on_rejected)]

    def on_store(self, event: evt.Event) -> int | Dataset:
        calling_ae = event.assoc.requestor.ae_title
        sop_uid = valid_uid(event.request.AffectedSOPInstanceUID)
        study_uid = None
        try:
            ds = decoded_instance(event)
            study_uid = valid_uid(ds.get("StudyInstanceUID"))
            sop_uid = valid_uid(ds.get("SOPInstanceUID")) or sop_uid
            shortfall = self.disk.shortfall() if self.disk is not None else None
            if shortfall is not None:  # logged once per crossing (DiskWatermark); audited per instance
                self._audit("rejected", study_uid, sop_uid, calling_ae=calling_ae, reason=shortfall, status="0xA700")
                return failure(OUT_OF_RESOURCES, shortfall)
            check_instance(ds, event.request)
            _, is_new = self.spool.store_encoded(study_uid, sop_uid, event.encoded_dataset())
        except (InvalidInstance, InvalidUID) as exc:
            log.warning("refused instance %s from %s: %s", sop_uid, calling_ae, exc)
            self._audit("rejected", study_uid, sop_uid, calling_ae=calling_ae, reason=str(exc))
            return failure(CANNOT_UNDERSTAND, str(exc))
        except OSError as exc:
            reason = f"cannot store: {exc.strerror or type(exc).__name__}"
            log.error("cannot spool instance %s: %s", sop_uid, reason)
            self._audit("error", study_uid, sop_uid, calling_ae=calling_ae, reason=reason)
            return failure(OUT_OF_RESOURCES, reason)
        except Exception as exc:  # noqa: BLE001 - a handler must answer, never raise
            log.exception("unexpected error storing %s", sop_uid)
            self._audit("error", study_uid, sop_uid, calling_ae=calling_ae, reason=type(exc).__name__)
            return failure(PROCESSING_FAILURE, type(exc).__name__)
        if is_new:
            self._audit("received", study_uid, sop_uid, calling_ae=calling_ae,
                        series_uid=str(ds.SeriesInstanceUID).strip(), sop_class_uid=str(ds.SOPClassUID))
            self.on_instance(study_uid)
        else:
            log.info("duplicate instance %s from %s kept as first received", sop_uid, calling_ae)
            self._audit("duplicate", study_uid, sop_uid, calling_ae=calling_ae)
        return SUCCESS

    def on_rejected(self, event: evt.Event) -> None:
        """An A-ASSOCIATE-RJ that pynetdicom sent: audit it with the reason it gave."""
        requestor, answer = event.assoc.requestor, event.assoc.acceptor.primitive
        key = (getattr(answer, "result_source", None), getattr(answer, "diagnostic", None))
        reason = REJECT_REASONS.get(key, f"rejected (source {key[0]}, reason {key[1]})")
        called_ae = getattr(requestor.primitive, "called_ae_title", "")
        log.warning("association from %s (%s) to %s rejected: %s", requestor.ae_title, requestor.address,
                    called_ae, reason)
        self._audit("association_rejected", None, None, calling_ae=requestor.ae_title, called_ae=called_ae,
                    address=requestor.address, reason=reason)

    def on_refused(self, address: str, reason: str) -> None:
        """A connection refused or cut off by the limits of scp_limits.py (already logged there)."""
        self._audit("association_rejected", None, None, address=address, reason=reason)

    def _audit(self, kind: str, study_uid: str | None, sop_uid: str | None, **details: object) -> None:
        try:
            self.audit.record(kind, study_uid, sop_uid, **details)
        except Exception:  # noqa: BLE001 - the audit database being down must not crash the SCP
            log.exception("cannot write audit event %s for %s", kind, sop_uid)


def make_ae(settings: Settings) -> AE:
    """An AE with the supported photographic SOP classes (all transfer syntaxes) plus Verification;
    calling (allow-list) and called AE titles checked."""
    ae = AE(ae_title=settings.ae_title)
    for sop_class in SUPPORTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(SUPPORTED_TRANSFER_SYNTAXES))
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(settings.allowed_calling_aes)
    ae.require_called_aet = True
    return ae


def start_scp(settings: Settings, receiver: Receiver) -> ThreadedAssociationServer:
    """Start listening on settings.host:settings.port in background threads."""
    # pydicom warns (and logs) about odd values by quoting them, PHI included; the checks above
    # refuse such instances or carry them through, with reasons that quote nothing.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    server = start_limited_server(make_ae(settings), (settings.host, settings.port), Limits.from_settings(settings),
                                  receiver.on_refused, evt_handlers=receiver.handlers,
                                  ssl_context=server_context(settings))
    log.info("%s listening on %s:%d%s (calling AEs allowed: %s)", settings.ae_title, settings.host, settings.port,
             " with TLS" if settings.tls_certificate else "",
             ", ".join(settings.allowed_calling_aes) or "any")
    return server
