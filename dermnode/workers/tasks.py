"""The per-study task: the study's images from the node, one analysis per image back to it.

The node encodes, stores and audits the results (node/intake.py); the worker reaches it through a
link (link.py): in-process on the node's host, over HTTP (``node_url``) from anywhere else.

Exactly once per image, with at-least-once delivery underneath: the broker may hand a study to a
worker twice (redelivery after a worker died, see celery_app.py), the reconciler may queue it
again, and a late instance queues it with a new idempotency key. The task therefore analyses only
the study's images that have no analysed row yet, and stores each image's results under its own
key (node/intake.py). ``analysis:<key>`` marks a key whose images all have results.

Transient errors (``TRANSIENT_ERRORS``: the node or its database unreachable or locked, a disk
error such as EIO or ENOSPC while reading the spool or writing the outbox, a study folder not
visible yet) are
retried with exponential back-off and jitter, at most ``MAX_RETRIES`` times; images finished
before the error are not redone. After the last retry the task fails; the study still owes
results in the database, where the reconciler finds it.
Problems of one image (unreadable, undecodable, odd header, encoding) are not errors of the task:
the image gets a failed SR and an audit row.

The models are loaded once per worker process, when it starts (readiness.py), or else on the first
study with images to analyse (``get_analyzer``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import shared_task
from sqlalchemy.exc import DBAPIError, OperationalError

from dermnode.node.settings import Settings
from dermnode.workers.celery_app import ANALYSE_TASK, analysis_queue, celery_for
from dermnode.workers.pipeline import Analyzer

if TYPE_CHECKING:
    from dermnode.node.audit import AuditStore
    from dermnode.node.outbox import Outbox
    from dermnode.workers.link import NodeLink

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, OSError)
MAX_RETRIES = 8
#: Back-off: about 2, 4, 8 ... seconds (with jitter), at most this many.
RETRY_BACKOFF_MAX_SECONDS = 600

_analyzer: Analyzer | None = None
_analyzer_lock = threading.Lock()


def get_analyzer(settings: Settings) -> Analyzer:
    """The process's Analyzer, loading the models on first use; with ``batch_images`` set, one that
    shares model batches among the studies the worker's threads run at once (batching.py)."""
    global _analyzer
    with _analyzer_lock:
        if _analyzer is None:
            start = time.perf_counter()
            analyzer = Analyzer.load(settings)
            log.info("models loaded in %.1f s: %s", time.perf_counter() - start, analyzer.identities)
            if settings.batch_images:
                from dermnode.workers.batching import BatchingAnalyzer

                analyzer = BatchingAnalyzer(analyzer, settings.batch_images, settings.batch_wait_seconds)
            _analyzer = analyzer
    return _analyzer


def use_analyzer(analyzer: Analyzer) -> None:
    """Make this process analyse with ``analyzer`` instead of loading the configured models."""
    global _analyzer
    _analyzer = analyzer


def enqueue_study(settings: Settings, study_uid: str, idempotency_key: str) -> str:
    """Put one study on the analysis queue; returns the Celery task id."""
    result = celery_for(settings).send_task(ANALYSE_TASK, args=[study_uid, idempotency_key], queue=analysis_queue(settings))
    return result.id


@shared_task(name=ANALYSE_TASK, bind=True, autoretry_for=TRANSIENT_ERRORS, max_retries=MAX_RETRIES,
             retry_backoff=True, retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS, retry_jitter=True)
def analyse_study(self, study_uid: str, idempotency_key: str) -> dict:
    """Celery entry point: analyse one spooled study with the worker's settings."""
    settings: Settings = self.app.dermnode_settings
    return process_study(settings, study_uid, idempotency_key)


def describe_error(error: BaseException) -> str:
    """A task error in words for the audit log: its type and what the database or disk said,
    without SQL parameters or file names (which could carry patient data)."""
    if isinstance(error, DBAPIError):
        said = str(error.orig).strip().splitlines()
        return f"{type(error).__name__}: {said[0] if said else type(error.orig).__name__}"
    if isinstance(error, ConnectionError) and error.errno is None:  # NodeUnreachable: says what, no PHI
        return f"{type(error).__name__}: {error}"
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__}: [Errno {error.errno}] {error.strerror}"
    return type(error).__name__


def process_study(settings: Settings, study_uid: str, idempotency_key: str, audit: AuditStore | None = None,
                  outbox: Outbox | None = None, link: NodeLink | None = None) -> dict[str, Any]:
    """Analyse the study's images that have no results yet and hand them to the node.

    ``link`` defaults to ``link_for(settings)`` (``audit``/``outbox`` are used by a local link).
    Errors of the task (not of one image) are reported to the node as ``error`` events, marked
    transient when the Celery task retries them, and raised."""
    from dermnode.workers.link import link_for
    from dermnode.workers.study import process

    own_link = link is None
    link = link or link_for(settings, audit, outbox)
    try:
        return process(link, study_uid, idempotency_key, lambda: get_analyzer(settings))
    except Exception as error:
        reason = describe_error(error)
        transient = isinstance(error, TRANSIENT_ERRORS)
        log.warning("study %s: %s%s", study_uid, reason, " (will be retried)" if transient else "")
        try:
            link.error(study_uid, idempotency_key, reason, transient)
        except Exception:  # noqa: BLE001 - the node or its database may be what failed; the error goes on up
            log.warning("study %s: the error could not be audited", study_uid)
        raise
    finally:
        if own_link:
            link.close()
