"""One study's images in, one analysis per image handed to the node: each image on its own.

The worker holds no state (link.py): it asks the node which images of the study still owe
results, fetches and analyses them, and hands each analysis back; the node encodes the SEG + SR
(+ KOS), stores them in its outbox and audits them (node/intake.py).

* **Each image is reported on its own.** An image that cannot be read, decoded or analysed gets a
  FAILED analysis with the reason; the node then writes a failed SR (when its UIDs allow a
  reference) and an audit row; the other images of the study get their full results.
* **Only images without results are analysed.** The node answers with the images that have no
  analysed row (keyed by SOP Instance UID), so a study that receives a late instance after its
  results were made is analysed for the new instance only, and a redelivered or retried task adds
  nothing for images it finished before.
* **A cancelled study is left alone** (an operator cancelled it, node/actions.py): the node
  answers that it owes nothing and stores nothing more for it.
* **No PHI in reasons or logs.** They name the SOP Instance UID and the problem; the text of an
  unexpected error has the image's text values replaced by their keywords (``describe``).

Transient errors (the node or its database unreachable, a disk error: ``OSError``) are not caught
here; the task retries them.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydicom import Dataset, dcmread

from dermnode.contract import AnalysisStatus, LesionAnalysis, PatientMetadata
from dermnode.dicom_templates.image_conversion import InvalidInstance, decode_rgb, patient_metadata, pixel_spacing_mm
from dermnode.dicom_templates.redaction import describe
from dermnode.dicom_templates.uids import unreferencable
from dermnode.workers.link import NodeLink
from dermnode.workers.pipeline import Analyzer, SourceImage

log = logging.getLogger(__name__)


@dataclass
class Source:
    """One image from the node: its dataset (None when unreadable), the decoded image or why not."""

    sop_uid: str
    dataset: Dataset | None
    metadata: PatientMetadata
    image: SourceImage | None
    failure: str | None = None


def load_source(sop_uid: str, data: bytes) -> Source:
    """Read and decode one instance's file as the node spooled it."""
    try:
        ds = dcmread(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - any parse error: this image fails, the others go on
        return Source(sop_uid, None, PatientMetadata(), None, f"the spooled file is not readable DICOM ({type(error).__name__})")
    if (reason := unreferencable(ds)) is not None:  # the node could not report it: not worth analysing
        return Source(sop_uid, ds, PatientMetadata(), None, reason)
    try:
        metadata = patient_metadata(ds)
        image = SourceImage(decode_rgb(ds), metadata, pixel_spacing_mm(ds), f"{sop_uid}.dcm", ds)
    except InvalidInstance as error:
        return Source(sop_uid, ds, PatientMetadata(), None, f"the image could not be decoded: {error}")
    except Exception as error:  # noqa: BLE001 - an odd header: this image fails, the others go on
        return Source(sop_uid, ds, PatientMetadata(), None, f"the header could not be read: {describe(error, ds)}")
    return Source(sop_uid, ds, metadata, image)


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


def process(link: NodeLink, study_uid: str, idempotency_key: str,
            load_analyzer: Callable[[], Analyzer]) -> dict[str, Any]:
    """Analyse the study's images that have no results yet and hand them to the node; a summary."""
    started = time.perf_counter()
    pending = link.pending(study_uid, idempotency_key)
    if pending.cancelled:
        log.info("study %s was cancelled by an operator; skipping", study_uid)
        return {"study_uid": study_uid, "skipped": True, "cancelled": True}
    if pending.done:
        log.info("study %s (key %s) was analysed already; skipping", study_uid, idempotency_key[:12])
        return {"study_uid": study_uid, "skipped": True}
    summary: dict[str, Any] = {"study_uid": study_uid, "skipped": True}
    if pending.sop_uids:
        analyzer = load_analyzer()
        sources = [load_source(sop_uid, link.instance(study_uid, sop_uid)) for sop_uid in pending.sop_uids]
        analyses = analyse(analyzer, sources)
        answers = [link.accept(study_uid, source.sop_uid, idempotency_key, analysis)
                   for source, analysis in zip(sources, analyses)]
        summary = {
            "study_uid": study_uid,
            "images": len(answers),
            "earlier": pending.earlier,
            "failed": sum(1 for answer in answers if answer.get("status") == AnalysisStatus.FAILED.value),
            "vetoed": sum(1 for answer, analysis in zip(answers, analyses)
                          if analysis.veto and answer.get("status") == analysis.status.value),
            "seconds": round(time.perf_counter() - started, 3),
        }
    else:
        log.info("study %s (key %s): every image has its results already", study_uid, idempotency_key[:12])
    link.finish(study_uid, idempotency_key, {k: v for k, v in summary.items() if k not in ("study_uid", "skipped")})
    return summary
