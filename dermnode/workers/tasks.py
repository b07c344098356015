"""The per-study task: spooled instances in, SEG + SR (+ KOS) into the outbox, every step audited.

Exactly once, with at-least-once delivery underneath: the broker may hand a study to a worker twice
(redelivery after a worker died, see celery_app.py). The task therefore

1. skips a study whose idempotency key is marked done (``analysis:<key>`` in the key table);
2. otherwise analyses it and hands the result files to ``Outbox.put(study_uid, datasets, key)``,
   which stores one result set per key and ignores a second put with the same key;
3. records one audit row per image (``record_analysis``, an ``analysed`` event each), then a
   ``study_analysed`` event, and marks the key done. When the put was ignored (an earlier run
   stored the results and died before step 3) the rows name the result UIDs that run stored.

The models are loaded once per worker process, on the first study (``get_analyzer``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from celery import shared_task

from dermnode.contract import AnalysisStatus, PatientMetadata
from dermnode.node.settings import Settings
from dermnode.workers.celery_app import ANALYSE_TASK, analysis_queue, celery_for
from dermnode.workers.pipeline import Analyzer, SourceImage

log = logging.getLogger(__name__)

_analyzer: Analyzer | None = None


def get_analyzer(settings: Settings) -> Analyzer:
    """The process's Analyzer, loading the models on first use."""
    global _analyzer
    if _analyzer is None:
        start = time.perf_counter()
        _analyzer = Analyzer.load(settings)
        log.info("models loaded in %.1f s: %s", time.perf_counter() - start, _analyzer.identities)
    return _analyzer


def use_analyzer(analyzer: Analyzer) -> None:
    """Make this process analyse with ``analyzer`` instead of loading the configured models."""
    global _analyzer
    _analyzer = analyzer


def enqueue_study(settings: Settings, study_uid: str, idempotency_key: str) -> str:
    """Put one study on the analysis queue; returns the Celery task id."""
    result = celery_for(settings).send_task(ANALYSE_TASK, args=[study_uid, idempotency_key], queue=analysis_queue(settings))
    return result.id


@shared_task(name=ANALYSE_TASK, bind=True)
def analyse_study(self, study_uid: str, idempotency_key: str) -> dict:
    """Celery entry point: analyse one spooled study with the worker's settings."""
    settings: Settings = self.app.dermnode_settings
    return process_study(settings, study_uid, idempotency_key)


@dataclass
class Source:
    """One spooled instance: its dataset and metadata, and the decoded image or why it failed."""

    dataset: object
    metadata: PatientMetadata
    image: SourceImage | None
    failure: str | None = None


def load_sources(files: list[Path]) -> tuple[list[Source], dict[Path, str]]:
    """Read and decode spooled files; files that are not readable DICOM at all come back apart."""
    from pydicom import dcmread

    from dermnode.dicom_templates.image_conversion import (
        InvalidInstance,
        decode_rgb,
        patient_metadata,
        pixel_spacing_mm,
    )

    sources: list[Source] = []
    unreadable: dict[Path, str] = {}
    for path in files:
        try:
            ds = dcmread(path)
        except Exception as error:  # noqa: BLE001 - reported, the other images go on
            unreadable[path] = f"{type(error).__name__}: {error}"
            continue
        metadata = patient_metadata(ds)
        try:
            image = SourceImage(decode_rgb(ds), metadata, pixel_spacing_mm(ds), path.name, ds)
        except InvalidInstance as error:
            sources.append(Source(ds, metadata, None, f"the image could not be decoded: {error}"))
            continue
        sources.append(Source(ds, metadata, image))
    return sources, unreadable


def _stored_uids(audit, study_uid: str, key: str, datasets: list) -> list[str] | None:
    """The SOP instance UIDs an earlier put stored for ``key``, in the order of ``datasets``."""
    for event in reversed(audit.events(study_uid, kind="outbox")):
        if event["details"].get("idempotency_key") == key:
            objects = event["details"].get("objects", [])
            return objects if len(objects) == len(datasets) else None
    return None


def process_study(settings: Settings, study_uid: str, idempotency_key: str, audit=None, outbox=None) -> dict:
    """Analyse every spooled image of a study and queue its results for export; returns a summary."""
    from dermnode.node.audit import AuditStore
    from dermnode.node.outbox import Outbox

    own_audit = audit is None
    audit = audit or AuditStore(settings.database_url)
    try:
        return _process(settings, study_uid, idempotency_key, audit, outbox or Outbox(settings, audit))
    finally:
        if own_audit:
            audit.close()


def _process(settings: Settings, study_uid: str, idempotency_key: str, audit, outbox) -> dict:
    from dermnode.dicom_templates.results import build_results
    from dermnode.node.audit import source_header
    from dermnode.node.spool import Spool

    done_key = f"analysis:{idempotency_key}"
    if audit.key_state(done_key) == "done":
        log.info("study %s (key %s) was analysed already; skipping", study_uid, idempotency_key[:12])
        return {"study_uid": study_uid, "skipped": True}
    started = time.perf_counter()
    try:
        files = Spool(settings.spool_dir).study_files(study_uid)
        if not files:
            raise FileNotFoundError(f"no spooled instances for study {study_uid} under {settings.spool_dir}")
        analyzer = get_analyzer(settings)
        sources, unreadable = load_sources(files)
        for path, reason in unreadable.items():
            audit.record("failed", study_uid, path.stem, reason=f"spooled file unreadable: {reason}")
        analysed = iter(analyzer.analyze([source.image for source in sources if source.image is not None]))
        analyses = [next(analysed) if source.image is not None else analyzer.failed(source.failure)
                    for source in sources]

        datasets, positions = [], []
        for n, (source, analysis) in enumerate(zip(sources, analyses)):
            try:
                results = build_results(source.dataset, analysis, kos_enabled=settings.kos_enabled,
                                        for_diagnostic_use=settings.for_diagnostic_use)
            except Exception as error:  # noqa: BLE001 - the SR then says the analysis failed, and why
                log.exception("study %s: results of %s could not be encoded", study_uid, source.dataset.SOPInstanceUID)
                analysis = analyses[n] = analyzer.failed(f"the results could not be encoded: {error}")
                results = build_results(source.dataset, analysis, kos_enabled=settings.kos_enabled,
                                        for_diagnostic_use=settings.for_diagnostic_use)
            kinds = [kind for kind in ("seg", "sr", "kos") if getattr(results, kind) is not None]
            positions.append({kind: len(datasets) + i for i, kind in enumerate(kinds)})  # datasets(): SEG, SR, KOS
            datasets.extend(results.datasets())
        stored = outbox.put(study_uid, datasets, idempotency_key)
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        if not stored:
            uids = _stored_uids(audit, study_uid, idempotency_key, datasets) or uids
        for source, analysis, where in zip(sources, analyses, positions):
            audit.record_analysis(source_header(source.dataset, source.metadata), analysis,
                                  {f"{kind}_sop_uid": uids[i] for kind, i in where.items()}, idempotency_key=idempotency_key)
    except Exception as error:
        audit.record("failed", study_uid=study_uid, idempotency_key=idempotency_key,
                     reason=f"{type(error).__name__}: {error}")
        raise
    summary = {
        "study_uid": study_uid,
        "images": len(analyses),
        "failed": sum(1 for analysis in analyses if analysis.status is AnalysisStatus.FAILED) + len(unreadable),
        "vetoed": sum(1 for analysis in analyses if analysis.veto),
        "seconds": round(time.perf_counter() - started, 3),
    }
    audit.record("study_analysed", study_uid=study_uid, idempotency_key=idempotency_key,
                 **{k: v for k, v in summary.items() if k != "study_uid"})
    audit.claim_key(done_key, study_uid)
    audit.mark_key(done_key, "done")
    return summary

