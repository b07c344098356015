"""Worker heartbeats in the broker: how the node knows which workers live and whether their models loaded.

Every worker process that analyses studies (workers/readiness.py) writes one Redis key,
``dermnode:worker:<node name>:<pid>``, every ``BEAT_SECONDS`` with a time to live of ``TTL_SECONDS``:
a JSON object with its node name, host, pid, the state of its models (``loading``, ``loaded``,
``failed``), the model identities (name, version, sha256 verified against the model card) and the
error when loading failed. A worker that stops cleanly deletes its key; one that dies stops
writing and its key expires. The node reads the keys (``read_workers``): this works the same for
the embedded worker and for workers on other hosts, since they all share the broker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

KEY_PREFIX = "dermnode:worker:"
BEAT_SECONDS = 2.0
TTL_SECONDS = 8
#: How long one call to the broker may take (readiness checks and metrics must answer promptly).
SOCKET_TIMEOUT_SECONDS = 1.0

_clients: dict[str, redis.Redis] = {}


def redis_client(broker_url: str) -> redis.Redis:
    """A Redis client for a Celery broker URL (``redis://``, ``rediss://``, ``redis+socket://``), cached."""
    if broker_url not in _clients:
        if broker_url.startswith("redis+socket://"):
            client = redis.Redis(unix_socket_path=broker_url.removeprefix("redis+socket://"),
                                 socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS)
        else:
            client = redis.Redis.from_url(broker_url, socket_timeout=SOCKET_TIMEOUT_SECONDS,
                                          socket_connect_timeout=SOCKET_TIMEOUT_SECONDS)
        _clients[broker_url] = client
    return _clients[broker_url]


@dataclass
class WorkerBeat:
    """What one worker process last said about itself."""

    name: str
    host: str
    pid: int
    models: str  # loading | loaded | failed
    identities: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    at: float = 0.0

    def key(self) -> str:
        return f"{KEY_PREFIX}{self.name}:{self.pid}"


def write_beat(client: redis.Redis, beat: WorkerBeat) -> None:
    """Publish (or refresh) a worker's heartbeat."""
    beat.at = time.time()
    client.set(beat.key(), json.dumps(beat.__dict__), ex=TTL_SECONDS)


def remove_beat(client: redis.Redis, beat: WorkerBeat) -> None:
    client.delete(beat.key())


def read_workers(client: redis.Redis) -> list[WorkerBeat]:
    """The heartbeats of every worker alive now (raises redis.RedisError when the broker is unreachable)."""
    keys = sorted(client.scan_iter(match=f"{KEY_PREFIX}*", count=100))
    found = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            values: dict[str, Any] = json.loads(raw)
            found.append(WorkerBeat(**values))
        except (ValueError, TypeError):
            continue  # another version's or application's key: not ours to judge
    return found
