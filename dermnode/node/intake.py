"""The node's side of the hand-off with workers: instances out, analyses in, results made here.

Workers hold no state. A worker asks which of a study's images still owe results (``pending``),
fetches each instance's bytes (``instance``), analyses them and hands each image's
:class:`~dermnode.contract.LesionAnalysis` back (``accept``). The node, the one owner of state,
then encodes the SEG + SR (+ KOS) from the spooled source, puts them in the outbox and writes the
image's audit row; ``finish`` marks the task's idempotency key done. The veto is decided at the
node's ``veto_threshold``, whatever the worker's settings say. A worker on the node's host
calls this class directly (workers/link.py ``LocalLink``); one on another host through serve's
HTTP endpoints (web/worker_api.py).

Exactly once per image: ``accept`` for an image that has its results already stores nothing and
answers the UIDs of the objects stored the first time, so a redelivered task or a retried request
is harmless. Problems of one image (unreadable spooled file, UIDs that no result can reference, an
encoding error) give that image a failed SR or only an audit row; they are not errors of the call.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import KeyObjectSelectionDocumentStorage, SegmentationStorage

from dermnode.contract import AnalysisStatus, LesionAnalysis, PatientMetadata
from dermnode.dicom_templates.image_conversion import patient_metadata
from dermnode.dicom_templates.redaction import describe
from dermnode.dicom_templates.results import build_results
from dermnode.dicom_templates.uids import unreferencable
from dermnode.node.audit import AuditStore, source_header
from dermnode.node.outbox import Outbox
from dermnode.node.schema import cancel_key
from dermnode.node.settings import Settings
from dermnode.node.spool import Spool

log = logging.getLogger("dermnode.intake")

class UnknownInstance(LookupError):
    """The study or instance is not in the spool."""


class ResultIntake:
    """Hands spooled instances to workers and turns their analyses into stored, audited results."""

    def __init__(self, settings: Settings, audit: AuditStore, outbox: Outbox | None = None,
                 spool: Spool | None = None) -> None:
        self.settings, self.audit = settings, audit
        self.outbox = outbox or Outbox(settings, audit)
        self.spool = spool or Spool(settings.spool_dir)

    # ------------------------------------------------------------------------ out to workers
    def cancelled(self, study_uid: str) -> bool:
        """True when an operator cancelled the study (node/actions.py): nothing more is made for it."""
        return self.audit.key_state(cancel_key(study_uid)) == "cancelled"

    def is_done(self, idempotency_key: str) -> bool:
        """True when every image of the task's content has its results (``finish`` was called)."""
        return self.audit.key_state(f"analysis:{idempotency_key}") == "done"

    def pending(self, study_uid: str) -> tuple[list[str], int]:
        """(SOP Instance UIDs of the study's spooled images without results, count of those with).

        FileNotFoundError when nothing of the study is spooled (a transient state for a worker:
        the study folder may not be visible yet on a slow disk)."""
        files = self.spool.study_files(study_uid)
        if not files:
            raise FileNotFoundError(f"no spooled instances for study {study_uid}")
        earlier = self.audit.analysed_images(study_uid)
        new = [path.stem for path in files if path.stem not in earlier]
        return new, len(files) - len(new)

    def instance(self, study_uid: str, sop_uid: str) -> bytes:
        """The spooled file of one instance, as received."""
        path = self._path(study_uid, sop_uid)
        return path.read_bytes()

    # ------------------------------------------------------------------------ in from workers
    def accept(self, study_uid: str, sop_uid: str, idempotency_key: str, analysis: LesionAnalysis) -> dict[str, Any]:
        """Encode, store and audit one image's results, once; returns the analysis reported and UIDs.

        The answer: ``{"status": ..., "failure_reason": ..., "result_uids": {"seg_sop_uid": ...}}``."""
        if sop_uid in self.audit.analysed_images(study_uid):
            return self._earlier_answer(study_uid, sop_uid)
        if self.cancelled(study_uid):  # cancelled mid-analysis: nothing goes out
            log.info("study %s was cancelled: the analysis of image %s is not stored", study_uid, sop_uid)
            return {"status": "cancelled", "failure_reason": None, "result_uids": {}}
        # the veto's operating point is the node's setting, whatever the worker was configured with
        analysis = replace(analysis, veto_threshold=self.settings.veto_threshold)
        ds, unreadable = self._source(study_uid, sop_uid)
        uids: dict[str, str] = {}
        if ds is None:
            analysis = self._failed(analysis, unreadable or "the spooled file is not readable DICOM")
        elif (reason := unreferencable(ds)) is not None:
            analysis = self._failed(analysis, reason)
        else:
            datasets, analysis = self._encode(ds, analysis)
            if datasets:
                uids = self._put(study_uid, sop_uid, datasets, analysis)
        if analysis.status is AnalysisStatus.FAILED:
            log.warning("study %s image %s: %s", study_uid, sop_uid, analysis.failure_reason)
        header = source_header(ds, self._metadata(ds)) if ds is not None else {}
        header.update(study_uid=study_uid, sop_instance_uid=sop_uid)
        if not self.audit.record_analysis(header, analysis, uids, idempotency_key=idempotency_key):
            return self._earlier_answer(study_uid, sop_uid)  # a concurrent accept of the same image won
        return {"status": analysis.status.value, "failure_reason": analysis.failure_reason, "result_uids": uids}

    def finish(self, study_uid: str, idempotency_key: str, summary: dict[str, Any]) -> None:
        """Every image of the task has its results: audit the study and mark the key done."""
        if summary.get("images"):
            self.audit.record("study_analysed", study_uid=study_uid, idempotency_key=idempotency_key, **summary)
        done_key = f"analysis:{idempotency_key}"
        self.audit.claim_key(done_key, study_uid)
        self.audit.mark_key(done_key, "done")

    def error(self, study_uid: str, idempotency_key: str, reason: str, transient: bool) -> None:
        """A worker's task failed (not one image: the task); audited, the study still owes results."""
        self.audit.record("error", study_uid=study_uid, idempotency_key=idempotency_key, reason=reason,
                          transient=transient)

    # ------------------------------------------------------------------------ helpers
    def _path(self, study_uid: str, sop_uid: str) -> Path:
        path = self.spool.path_for(study_uid, sop_uid)
        if not path.is_file():
            raise UnknownInstance(f"instance {sop_uid} of study {study_uid} is not spooled")
        return path

    def _source(self, study_uid: str, sop_uid: str) -> tuple[Dataset | None, str | None]:
        """The spooled dataset, or None and why. OSError (a disk problem) is raised, to be retried."""
        path = self._path(study_uid, sop_uid)
        try:
            return dcmread(path), None
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - any parse error: this image fails, the others go on
            return None, f"the spooled file is not readable DICOM ({type(error).__name__})"

    @staticmethod
    def _metadata(ds: Dataset) -> PatientMetadata:
        try:
            return patient_metadata(ds)
        except Exception:  # noqa: BLE001 - an odd header was reported by the worker already
            return PatientMetadata()

    @staticmethod
    def _failed(analysis: LesionAnalysis, reason: str) -> LesionAnalysis:
        """A FAILED analysis for the same models, for a reason found on the node's side."""
        if analysis.status is AnalysisStatus.FAILED and analysis.failure_reason:
            reason = analysis.failure_reason if reason in analysis.failure_reason else f"{analysis.failure_reason}; {reason}"
        return LesionAnalysis(status=AnalysisStatus.FAILED, veto_threshold=analysis.veto_threshold,
                              pixel_spacing_mm=analysis.pixel_spacing_mm, models=analysis.models,
                              failure_reason=reason)

    def _build(self, ds: Dataset, analysis: LesionAnalysis) -> list[Dataset]:
        return build_results(ds, analysis, kos_enabled=self.settings.kos_enabled,
                             for_diagnostic_use=self.settings.for_diagnostic_use).datasets()

    def _encode(self, ds: Dataset, analysis: LesionAnalysis) -> tuple[list[Dataset], LesionAnalysis]:
        """The SEG/SR/KOS; a failed SR if those cannot be made; none if not even that can."""
        try:
            return self._build(ds, analysis), analysis
        except Exception as error:  # noqa: BLE001 - the SR then says the analysis failed, and why
            analysis = self._failed(analysis, f"the results could not be encoded: {describe(error, ds)}")
        try:
            return self._build(ds, analysis), analysis
        except Exception as error:  # noqa: BLE001 - the audit row is all that is left
            return [], replace(analysis, failure_reason=f"{analysis.failure_reason}; no failed SR could be made "
                                                        f"either: {describe(error, ds)}")

    def _put(self, study_uid: str, sop_uid: str, datasets: list[Dataset], analysis: LesionAnalysis) -> dict[str, str]:
        """Put one image's objects in the outbox; their UIDs by kind (those an earlier put stored)."""
        key = f"image:{sop_uid}"
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        if not self.outbox.put(study_uid, datasets, key, veto=bool(analysis.veto)):
            uids = self._stored_uids(study_uid, key, len(datasets)) or uids
        kinds = {SegmentationStorage: "seg", KeyObjectSelectionDocumentStorage: "kos"}
        return {f"{kinds.get(str(ds.SOPClassUID), 'sr')}_sop_uid": uid for ds, uid in zip(datasets, uids)}

    def _stored_uids(self, study_uid: str, key: str, count: int) -> list[str] | None:
        """The SOP Instance UIDs an earlier put stored under ``key``, in the same order."""
        for event in reversed(self.audit.events(study_uid, kind="outbox")):
            if event["details"].get("idempotency_key") == key:
                objects = event["details"].get("objects", [])
                return objects if len(objects) == count else None
        return None

    def _earlier_answer(self, study_uid: str, sop_uid: str) -> dict[str, Any]:
        """The answer of the image's first ``accept``, from its analysed event (a repeated call)."""
        for event in self.audit.events(study_uid, kind="analysed"):
            if event.get("sop_instance_uid") == sop_uid:
                details = event["details"]
                uids = {f"{kind}_sop_uid": uid for kind, uid in details.get("result_uids", {}).items() if uid}
                return {"status": details.get("status"), "failure_reason": details.get("failure_reason"),
                        "result_uids": uids}
        return {"status": None, "failure_reason": None, "result_uids": {}}
