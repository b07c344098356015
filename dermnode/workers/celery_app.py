"""The Celery application of the node: Redis broker, late acknowledgement, one task at a time.

Delivery guarantees (Celery's Redis transport):

* ``task_acks_late``: a task is acknowledged only after it has run, so a worker that dies mid-task
  leaves its message unacknowledged.
* ``task_reject_on_worker_lost``: when a pool child dies (prefork pool) the parent worker requeues
  the message at once.
* When the whole worker dies (``kill -9``, power cut) nobody requeues: the message stays in Redis'
  "unacked" set and any live worker puts it back on the queue once it is older than the
  **visibility timeout** (setting ``visibility_timeout``, default one hour). Choose it longer
  than the longest study takes, or a slow study would also be handed to a second worker (still
  harmless: results are stored once per idempotency key, see tasks.py). Live workers sweep for
  such messages every ``restore_interval`` seconds (default 10) and when they start.
* ``worker_prefetch_multiplier = 1``: a worker holds one study at a time, so a dying worker strands
  at most one.
* Redis itself may lose messages (an external redis-server restarted without persistence, the last
  second before a crash). ``dermnode serve``'s reconciler (node/reconcile.py) covers that: it asks
  ``live_tasks`` which studies the broker still holds, waiting in a queue or delivered and not yet
  acknowledged (kombu's ``unacked`` hash, where a dead worker's message waits for its visibility
  timeout), and queues again the complete, unanalysed studies that are in neither.

Queues: studies go to ``settings.queue``; when ``settings.gpu_queue`` is set they go there instead,
for workers on GPU hosts (``dermnode worker --queues <gpu_queue>``). Messages are JSON.

``celery -A dermnode.workers.celery_app worker`` finds ``app``, built on first use from the settings
in the environment / TOML file, or from the JSON file named by ``DERMNODE_WORKER_SETTINGS`` (how the
embedded queue hands a worker subprocess the exact settings of the node that started it).
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

from celery import Celery
from kombu import Queue

from dermnode.node.settings import Settings, load_settings

TASK_MODULE = "dermnode.workers.tasks"
#: Loads the models when a worker process starts and publishes its heartbeat (see readiness.py).
READINESS_MODULE = "dermnode.workers.readiness"
ANALYSE_TASK = "dermnode.analyse_study"
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
WORKER_SETTINGS_ENV = "DERMNODE_WORKER_SETTINGS"


def analysis_queue(settings: Settings) -> str:
    """The queue studies are sent to: the GPU queue when one is configured."""
    return settings.gpu_queue or settings.queue


def make_celery(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` (Redis) with the node's delivery guarantees."""
    if not settings.broker_url:
        raise ValueError(
            "no broker_url: set DERMNODE_BROKER_URL (redis://host:port/db) or let `dermnode serve` "
            "start its embedded queue"
        )
    app = Celery("dermnode", broker=settings.broker_url, backend=settings.broker_url, include=[TASK_MODULE, READINESS_MODULE])
    queues = {settings.queue, analysis_queue(settings)}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_queues=[Queue(name) for name in sorted(queues)],
        task_routes={ANALYSE_TASK: {"queue": analysis_queue(settings)}},
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT,
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        # a prefork child loads the models before it reports for work (readiness.py): give it time
        worker_proc_alive_timeout=300,
    )
    app.dermnode_settings = settings
    return app


_apps: dict[str, Celery] = {}


def celery_for(settings: Settings) -> Celery:
    """One app per broker URL in this process (for senders such as `serve`)."""
    if settings.broker_url not in _apps:
        _apps[settings.broker_url] = make_celery(settings)
    return _apps[settings.broker_url]


def worker_settings() -> Settings:
    """The settings a worker process runs with (see the module docstring)."""
    path = os.environ.get(WORKER_SETTINGS_ENV)
    if path:
        return load_settings(**json.loads(Path(path).read_text()))
    return load_settings()


def worker_node_name() -> str:
    """A Celery node name of its own for this worker process: ``dermnode-worker-<pid>@<host>``."""
    return f"dermnode-worker-{os.getpid()}@{socket.gethostname()}"


def live_tasks(settings: Settings) -> set[str]:
    """Task ids and string arguments (study UID, idempotency key) of every message the broker holds
    for the node's queues: waiting, or delivered to a worker and not yet acknowledged.

    Raises the transport's error when the broker cannot be reached.
    """
    with celery_for(settings).connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        # kombu keeps one Redis list per queue and priority step (_q_for_pri names them)
        raw = [item for queue in {settings.queue, analysis_queue(settings)} for step in channel.priority_steps
               for item in client.lrange(channel._q_for_pri(queue, step), 0, -1)]
        messages = [json.loads(item) for item in raw]
        messages += [json.loads(item)[0] for item in client.hvals(channel.unacked_key)]  # [message, exchange, key]
    found: set[str] = set()
    for message in messages:
        found.add(str(message.get("headers", {}).get("id")))
        try:  # a JSON body [args, kwargs, embed]; another application's message may be anything
            body = message.get("body", "")
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
        except (ValueError, TypeError, LookupError):
            continue
        found.update(arg for arg in args if isinstance(arg, str))
    return found


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    """``app`` (and ``celery``) are built on first access, so importing this module reads nothing."""
    global _app
    if name not in ("app", "celery"):
        raise AttributeError(name)
    if _app is None:
        _app = make_celery(worker_settings())
    return _app
