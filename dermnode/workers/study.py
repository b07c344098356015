"""One study's spooled images in, one result set per image out: each image on its own.

* **Each image is reported on its own.** An image that cannot be read, decoded, analysed or encoded
  gets a FAILED analysis with the reason, an SR saying so (when its UIDs allow a reference) and an
  audit row; the other images of the study get their full results.
* **Only images without results are analysed.** An image that has an analysed row (keyed by SOP
  Instance UID) is skipped, so a study that receives a late instance after its results were made
  is analysed for the new instance only, and a redelivered or retried task adds nothing for images
  it finished before.
* **One result set per image in the outbox.** Results are put per image under the key
  ``image:<SOP Instance UID>``: a second put for the image is a no-op, and the audit row then
  names the objects the first put stored.
* **A cancelled study is left alone** (an operator cancelled it, node/actions.py): skipped when its
  task starts.
* **No PHI in reasons or logs.** They name the SOP Instance UID and the problem; the text of an
  unexpected error has the image's text values replaced by their keywords (``redact``).

Transient errors (database, disk: ``OSError``) are not caught here; the task retries them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydicom import Dataset, dcmread
from pydicom.uid import KeyObjectSelectionDocumentStorage, SegmentationStorage

from dermnode.contract import AnalysisStatus, LesionAnalysis, PatientMetadata
from dermnode.dicom_templates.image_conversion import InvalidInstance, decode_rgb, patient_metadata, pixel_spacing_mm
from dermnode.dicom_templates.results import build_results
from dermnode.node.audit import AuditStore, source_header
from dermnode.node.outbox import Outbox
from dermnode.node.schema import cancel_key
from dermnode.node.settings import Settings
from dermnode.node.spool import InvalidUID, Spool, check_uid
from dermnode.workers.pipeline import Analyzer, SourceImage

log = logging.getLogger(__name__)

#: The UIDs a result object needs to reference its source image.
REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: Value representations whose values may carry patient information (replaced in error texts).
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}


def redact(message: str, ds: Dataset | None) -> str:
    """``message`` with every text value (3 characters or more) of ``ds`` replaced by ``<Keyword>``."""
    if ds is None:
        return message
    values = []
    for element in ds.iterall():
        if element.VR in _TEXT_VRS and element.value not in (None, ""):
            for value in element.value if element.VM > 1 else [element.value]:
                if len(str(value).strip()) >= 3:
                    values.append((str(value).strip(), f"<{element.keyword or element.tag}>"))
    for value, keyword in sorted(values, key=lambda item: -len(item[0])):
        message = message.replace(value, keyword)
    return message


def describe(error: BaseException, ds: Dataset | None = None) -> str:
    """An exception in words without element values: its type and its redacted first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {redact(text, ds)[:300]}" if text else type(error).__name__


@dataclass
class Source:
    """One spooled image: its dataset (None when unreadable), the decoded image or why not."""

    sop_uid: str
    dataset: Dataset | None
    metadata: PatientMetadata
    image: SourceImage | None
    failure: str | None = None
    referencable: bool = False


def load_source(path: Path) -> Source:
    """Read and decode one spooled file. OSError (a disk problem) is raised, to be retried."""
    sop_uid = path.stem  # the spool names every file by its SOP Instance UID
    try:
        ds = dcmread(path)
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse error: this image fails, the others go on
        return Source(sop_uid, None, PatientMetadata(), None, f"the spooled file is not readable DICOM ({type(error).__name__})")
    missing = []
    for keyword in REFERENCE_UIDS:
        try:
            check_uid(ds.get(keyword), keyword)
        except InvalidUID:
            missing.append(keyword)
    if missing:
        reason = f"no valid {', '.join(missing)}: no result object can reference the image"
        return Source(sop_uid, ds, PatientMetadata(), None, reason)
    try:
        metadata = patient_metadata(ds)
        image = SourceImage(decode_rgb(ds), metadata, pixel_spacing_mm(ds), path.name, ds)
    except InvalidInstance as error:
        return Source(sop_uid, ds, PatientMetadata(), None, f"the image could not be decoded: {error}", True)
    except Exception as error:  # noqa: BLE001 - an odd header: this image fails, the others go on
        return Source(sop_uid, ds, PatientMetadata(), None, f"the header could not be read: {describe(error, ds)}", True)
    return Source(sop_uid, ds, metadata, image, referencable=True)


def analyse(analyzer: Analyzer, sources: list[Source]) -> list[LesionAnalysis]:
    """One analysis per source: the decoded images in batches (one by one if a batch raises)."""
    images = [source.image for source in sources if source.image is not None]
    try:
        analyses = analyzer.analyze(images)
        if len(analyses) != len(images):
            raise RuntimeError(f"{len(analyses)} analyses for {len(images)} images")
    except Exception:  # noqa: BLE001 - find the image that broke the batch
        analyses = [_analyse_one(analyzer, image) for image in images]
    done = iter(analyses)
    return [next(done) if source.image is not None else analyzer.failed(source.failure) for source in sources]


def _analyse_one(analyzer: Analyzer, image: SourceImage) -> LesionAnalysis:
    try:
        return analyzer.analyze([image])[0]
    except Exception as error:  # noqa: BLE001 - reported in this image's SR
        return analyzer.failed(f"the analysis failed: {describe(error, image.dataset)}", image.pixel_spacing_mm)


class StudyReporter:
    """Encodes, stores and records the results of one study's images, image by image."""

    def __init__(self, settings: Settings, study_uid: str, idempotency_key: str, audit: AuditStore,
                 outbox: Outbox, analyzer: Analyzer) -> None:
        self.settings, self.study_uid, self.key = settings, study_uid, idempotency_key
        self.audit, self.outbox, self.analyzer = audit, outbox, analyzer

    def report(self, source: Source, analysis: LesionAnalysis) -> LesionAnalysis:
        """Results of one image into the outbox (once), then its audit row; returns the analysis reported."""
        uids: dict[str, str] = {}
        if source.referencable:
            datasets, analysis = self._encode(source, analysis)
            if datasets:
                uids = self._put(source, datasets, analysis)
        if analysis.status is AnalysisStatus.FAILED:
            log.warning("study %s image %s: %s", self.study_uid, source.sop_uid, analysis.failure_reason)
        header = source_header(source.dataset, source.metadata) if source.dataset is not None else {}
        header.update(study_uid=self.study_uid, sop_instance_uid=source.sop_uid)
        self.audit.record_analysis(header, analysis, uids, idempotency_key=self.key)
        return analysis

    def _build(self, source: Source, analysis: LesionAnalysis) -> list[Dataset]:
        return build_results(source.dataset, analysis, kos_enabled=self.settings.kos_enabled,
                             for_diagnostic_use=self.settings.for_diagnostic_use).datasets()

    def _encode(self, source: Source, analysis: LesionAnalysis) -> tuple[list[Dataset], LesionAnalysis]:
        """The SEG/SR/KOS; a failed SR if those cannot be made; none if not even that can."""
        try:
            return self._build(source, analysis), analysis
        except Exception as error:  # noqa: BLE001 - the SR then says the analysis failed, and why
            analysis = self.analyzer.failed(f"the results could not be encoded: {describe(error, source.dataset)}",
                                            analysis.pixel_spacing_mm)
        try:
            return self._build(source, analysis), analysis
        except Exception as error:  # noqa: BLE001 - the audit row is all that is left
            analysis.failure_reason += f"; no failed SR could be made either: {describe(error, source.dataset)}"
            return [], analysis

    def _put(self, source: Source, datasets: list[Dataset], analysis: LesionAnalysis) -> dict[str, str]:
        """Put one image's objects in the outbox; their UIDs by kind (those an earlier put stored)."""
        key = f"image:{source.sop_uid}"
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        if not self.outbox.put(self.study_uid, datasets, key, veto=bool(analysis.veto)):
            uids = self._stored_uids(key, len(datasets)) or uids
        kinds = {SegmentationStorage: "seg", KeyObjectSelectionDocumentStorage: "kos"}
        return {f"{kinds.get(str(ds.SOPClassUID), 'sr')}_sop_uid": uid for ds, uid in zip(datasets, uids)}

    def _stored_uids(self, key: str, count: int) -> list[str] | None:
        """The SOP Instance UIDs an earlier put stored under ``key``, in the same order."""
        for event in reversed(self.audit.events(self.study_uid, kind="outbox")):
            if event["details"].get("idempotency_key") == key:
                objects = event["details"].get("objects", [])
                return objects if len(objects) == count else None
        return None


def process(settings: Settings, study_uid: str, idempotency_key: str, audit: AuditStore, outbox: Outbox,
            load_analyzer: Callable[[], Analyzer]) -> dict[str, Any]:
    """Analyse and report the study's images that have no results yet; returns a summary."""
    done_key = f"analysis:{idempotency_key}"
    if audit.key_state(cancel_key(study_uid)) == "cancelled":
        log.info("study %s was cancelled by an operator; skipping", study_uid)
        return {"study_uid": study_uid, "skipped": True, "cancelled": True}
    if audit.key_state(done_key) == "done":
        log.info("study %s (key %s) was analysed already; skipping", study_uid, idempotency_key[:12])
        return {"study_uid": study_uid, "skipped": True}
    started = time.perf_counter()
    files = Spool(settings.spool_dir).study_files(study_uid)
    if not files:
        raise FileNotFoundError(f"no spooled instances for study {study_uid} under {settings.spool_dir}")
    earlier = audit.analysed_images(study_uid)
    new = [path for path in files if path.stem not in earlier]
    if new:
        analyzer = load_analyzer()
        sources = [load_source(path) for path in new]
        reporter = StudyReporter(settings, study_uid, idempotency_key, audit, outbox, analyzer)
        reported = [reporter.report(source, analysis) for source, analysis in zip(sources, analyse(analyzer, sources))]
        summary = {
            "study_uid": study_uid,
            "images": len(reported),
            "earlier": len(files) - len(new),
            "failed": sum(1 for analysis in reported if analysis.status is AnalysisStatus.FAILED),
            "vetoed": sum(1 for analysis in reported if analysis.veto),
            "seconds": round(time.perf_counter() - started, 3),
        }
        audit.record("study_analysed", study_uid=study_uid, idempotency_key=idempotency_key,
                     **{k: v for k, v in summary.items() if k != "study_uid"})
    else:
        log.info("study %s (key %s): every image has its results already", study_uid, idempotency_key[:12])
        summary = {"study_uid": study_uid, "skipped": True}
    audit.claim_key(done_key, study_uid)
    audit.mark_key(done_key, "done")
    return summary
