"""Prometheus metrics, read from the node's database, the broker and the disk at each scrape.

The audit log is the source: counters (instances received and refused, vetoes) and the stage
duration histograms are sums over its events and analyses, so they survive restarts of the node.
Each scrape reads only the rows added since the last one. Gauges (studies by state, exports by
destination and state, queue depth, workers, free disk, readiness) are read afresh.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import Counter
from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from dermnode.node.health import MIB, free_disk_mb
from dermnode.node.heartbeat import redis_client
from dermnode.node.schema import analyses, deliveries, events
from dermnode.node.studies import STATES
from dermnode.web.context import NodeContext

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: kombu's Redis transport keeps one list per queue and priority step: ``queue`` and ``queue\x06\x16<n>``.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def reason_label(reason: str) -> str:
    """A refusal reason as a label of few distinct values: quoted values and numbers blanked."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'...'", reason or "unknown"))[:80]


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        cumulative, found = 0, []
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.counts):
            cumulative += count
            found.append((bound, cumulative))
        return found


class NodeCollector(Collector):
    """The node's metrics; thread-safe (a scrape at a time)."""

    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._event_id = 0
        self._analysis_id = 0
        self._received = 0
        self._refused: Counter[str] = Counter()
        self._associations_refused: Counter[str] = Counter()
        self._vetoes = 0
        self._stages: dict[str, _Histogram] = {}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._read_new_rows()
            yield from self._counters()
            yield from self._gauges()

    def _read_new_rows(self) -> None:
        audit = self.context.audit
        with audit.engine.connect() as connection:
            for row in connection.execute(
                select(events.c.id, events.c.kind, events.c.sop_instance_uid, events.c.details)
                .where(events.c.id > self._event_id,
                       events.c.kind.in_(("received", "rejected", "error", "association_rejected", "study_analysed")))
                .order_by(events.c.id)
            ):
                self._event_id = row.id
                details = row.details or {}
                if row.kind == "received":
                    self._received += 1
                elif row.kind == "rejected" or (row.kind == "error" and "calling_ae" in details):
                    self._refused[reason_label(details.get("reason", ""))] += 1  # refused at C-STORE
                elif row.kind == "association_rejected":
                    self._associations_refused[reason_label(details.get("reason", ""))] += 1
                elif row.kind == "study_analysed" and isinstance(details.get("seconds"), (int, float)):
                    self._stages.setdefault("study", _Histogram()).observe(float(details["seconds"]))
            for row in connection.execute(select(analyses.c.id, analyses.c.result)
                                          .where(analyses.c.id > self._analysis_id).order_by(analyses.c.id)):
                self._analysis_id = row.id
                self._vetoes += bool(row.result.get("veto"))
                for stage, seconds in (row.result.get("seconds") or {}).items():
                    self._stages.setdefault(stage, _Histogram()).observe(float(seconds))

    def _counters(self) -> Iterator[Metric]:
        received = CounterMetricFamily("dermnode_instances_received", "Instances received and spooled (not duplicates)")
        received.add_metric([], self._received)
        yield received
        refused = CounterMetricFamily("dermnode_instances_refused", "Instances refused at C-STORE, by reason",
                                      labels=["reason"])
        for reason, count in sorted(self._refused.items()):
            refused.add_metric([reason], count)
        yield refused
        associations = CounterMetricFamily("dermnode_associations_refused", "Associations refused, by reason",
                                           labels=["reason"])
        for reason, count in sorted(self._associations_refused.items()):
            associations.add_metric([reason], count)
        yield associations
        vetoes = CounterMetricFamily("dermnode_vetoes", "Images whose malignancy probability reached the veto threshold")
        vetoes.add_metric([], self._vetoes)
        yield vetoes
        stages = HistogramMetricFamily("dermnode_stage_duration_seconds",
                                       "Seconds per image and analysis stage (stage=study: per study)",
                                       labels=["stage"])
        for stage, histogram in sorted(self._stages.items()):
            stages.add_metric([stage], histogram.buckets(), sum_value=histogram.total)
        yield stages
        if self.context.embedded_worker_restarts is not None:
            restarts = CounterMetricFamily("dermnode_embedded_worker_restarts", "Restarts of serve's embedded worker")
            restarts.add_metric([], self.context.embedded_worker_restarts())
            yield restarts

    def _gauges(self) -> Iterator[Metric]:
        context = self.context
        by_state = Counter(study["state"] for study in context.studies.summaries())
        studies = GaugeMetricFamily("dermnode_studies", "Studies by state", labels=["state"])
        for state in STATES:
            studies.add_metric([state], by_state.get(state, 0))
        yield studies
        exports = GaugeMetricFamily("dermnode_exports", "Result objects per destination and delivery state",
                                    labels=["destination", "state"])
        with context.audit.engine.connect() as connection:
            for destination, state, count in connection.execute(
                    select(deliveries.c.destination, deliveries.c.state, func.count())
                    .group_by(deliveries.c.destination, deliveries.c.state)):
                exports.add_metric([destination, state], count)
        yield exports
        yield from self._broker_gauges()
        disk = GaugeMetricFamily("dermnode_home_free_bytes", "Free disk of the node's home folder")
        disk.add_metric([], free_disk_mb(context.settings) * MIB)
        yield disk

    def _broker_gauges(self) -> Iterator[Metric]:
        settings = self.context.settings
        readiness = self.context.health.run()
        ready = GaugeMetricFamily("dermnode_ready", "1 when every readiness check passes (see /readyz)")
        ready.add_metric([], float(readiness.ready))
        yield ready
        checks = GaugeMetricFamily("dermnode_check_ok", "Each readiness check: 1 passes, 0 fails", labels=["check"])
        for name, problem in readiness.checks.items():
            checks.add_metric([name], float(problem is None))
        yield checks
        workers = GaugeMetricFamily("dermnode_workers_alive", "Workers with a fresh heartbeat, by model state",
                                    labels=["models"])
        states = Counter(beat.models for beat in readiness.workers)
        for state in ("loading", "loaded", "failed"):
            workers.add_metric([state], states.get(state, 0))
        yield workers
        if readiness.checks["broker"] is not None:
            return
        depth = GaugeMetricFamily("dermnode_queue_depth", "Studies waiting in the broker, by queue", labels=["queue"])
        client = redis_client(settings.broker_url)
        try:
            for queue in sorted({settings.queue, settings.gpu_queue or settings.queue}):
                depth.add_metric([queue], sum(client.llen(queue + suffix) for suffix in _PRIORITY_SUFFIXES))
            unacked = client.hlen("unacked")
        except Exception:  # noqa: BLE001 - the broker went away since the readiness check
            return
        yield depth
        taken = GaugeMetricFamily("dermnode_queue_unacknowledged", "Studies delivered to a worker, not yet acknowledged")
        taken.add_metric([], unacked)
        yield taken


def make_registry(context: NodeContext) -> CollectorRegistry:
    """A registry with only the node's metrics (no process metrics of the library's default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(context))
    return registry
