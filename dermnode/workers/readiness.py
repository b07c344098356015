"""A worker loads its models when it starts and tells the node, through the broker, how that went.

On ``worker_process_init`` (the solo pool's only process, or each prefork child) the process starts
a heartbeat thread (node/heartbeat.py: state ``loading``) and loads the models (``get_analyzer``:
weights checked against the sha256 of their model cards) before it takes its first study, so the
first study is not late by the loading time. The heartbeat then says ``loaded`` with the model
identities, or ``failed`` with the error (a missing models folder, a hash mismatch): the worker keeps
running and answering, so that the node's /readyz can name the problem instead of seeing a worker
that restarts in a loop. A clean shutdown removes the heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import current_app, signals

from dermnode.node.heartbeat import BEAT_SECONDS, WorkerBeat, redis_client, remove_beat, write_beat
from dermnode.workers.tasks import get_analyzer

log = logging.getLogger(__name__)

_beat: WorkerBeat | None = None
_stopping = threading.Event()


def _beat_forever(broker_url: str, beat: WorkerBeat) -> None:
    """Refresh the heartbeat every BEAT_SECONDS until the process stops (a daemon thread); one
    warning when the broker stops taking it, one line when it takes it again."""
    client = redis_client(broker_url)
    failing = False
    while not _stopping.is_set():
        try:
            write_beat(client, beat)
            if failing:
                log.warning("the worker heartbeat reaches the broker again")
            failing = False
        except Exception as error:  # noqa: BLE001 - the broker may be down for a while; keep beating
            if not failing:
                log.warning("cannot write the worker heartbeat (retrying every %s s, quietly): %s", BEAT_SECONDS, error)
            failing = True
        _stopping.wait(BEAT_SECONDS)


@signals.worker_process_init.connect
def load_models_at_start(sender: object = None, **_: object) -> None:
    """Announce this process, load its models, announce the outcome."""
    global _beat
    settings = getattr(current_app, "dermnode_settings", None)
    if settings is None:  # not a dermnode app
        return
    host = socket.gethostname()
    name = str(sender) if sender else f"dermnode-worker@{host}"
    _beat = WorkerBeat(name=name, host=host, pid=os.getpid(), models="loading")
    threading.Thread(target=_beat_forever, args=(settings.broker_url, _beat), name="dermnode-heartbeat",
                     daemon=True).start()
    try:
        analyzer = get_analyzer(settings)
    except Exception as error:  # noqa: BLE001 - reported through the heartbeat (and /readyz)
        log.error("cannot load the models: %s", error)
        _beat.error, _beat.models = f"{type(error).__name__}: {error}", "failed"
    else:
        _beat.identities = [{"name": m.name, "version": m.version, "sha256": m.sha256} for m in analyzer.identities]
        _beat.models = "loaded"
    _refresh()


@signals.worker_shutdown.connect
def remove_heartbeat(**_: object) -> None:
    """A worker that stops cleanly is gone at once, not after the heartbeat's time to live."""
    _stopping.set()
    if _beat is not None:
        try:
            remove_beat(redis_client(current_app.dermnode_settings.broker_url), _beat)
        except Exception:  # noqa: BLE001 - it expires by itself
            pass


def _refresh() -> None:
    """Write the heartbeat now (not at the next beat) after its state changed."""
    try:
        write_beat(redis_client(current_app.dermnode_settings.broker_url), _beat)
    except Exception:  # noqa: BLE001 - the beat thread tries again
        pass
