"""Images of several studies in one model batch, for workers on a GPU.

A GPU analyses 32 images in little more time than one, but a worker holds one study (1-5 images)
at a time. With ``batch_images`` set, ``dermnode worker`` runs that many studies at once in
threads, and their ``analyze`` calls meet here: the first request waits up to
``batch_wait_seconds`` for others, then one thread runs the models over all their images
together and hands each study its own analyses. The models are only ever called from that thread.
CPU workers leave it off: a CPU gains nothing from larger batches (benchmarks/bench_node.py).

A batch that raises is run again request by request, so one study's bad image cannot fail
another study's images (the study's own fallback then finds the image, see study.py).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from dermnode.contract import LesionAnalysis
from dermnode.workers.pipeline import Analyzer, SourceImage


@dataclass
class _Request:
    images: list[SourceImage]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[LesionAnalysis] | None = None
    error: BaseException | None = None


class BatchingAnalyzer:
    """An Analyzer whose ``analyze`` calls from many threads share model batches."""

    def __init__(self, inner: Analyzer, max_images: int, wait_seconds: float) -> None:
        self.inner, self.max_images, self.wait_seconds = inner, max_images, wait_seconds
        self._requests: queue.Queue[_Request] = queue.Queue()
        self.batches: list[int] = []  # images per model call, for benchmarks and tests
        threading.Thread(target=self._run, name="dermnode-batcher", daemon=True).start()

    def __getattr__(self, name: str) -> Any:  # failed, not_analysable, identities, veto_threshold ...
        return getattr(self.inner, name)

    def analyze(self, images: Sequence[SourceImage]) -> list[LesionAnalysis]:
        """One analysis per image, in order, computed in a batch shared with other threads' calls."""
        request = _Request(list(images))
        if not request.images:
            return []
        self._requests.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _collect(self) -> list[_Request]:
        batch = [self._requests.get()]
        count, deadline = len(batch[0].images), time.monotonic() + self.wait_seconds
        while count < self.max_images:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._requests.get(timeout=remaining))
            except queue.Empty:
                break
            count += len(batch[-1].images)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._collect()
            try:
                results = self.inner.analyze([image for request in batch for image in request.images])
                if len(results) != sum(len(request.images) for request in batch):
                    raise RuntimeError(f"{len(results)} analyses for {sum(len(r.images) for r in batch)} images")
                self.batches.append(len(results))
                start = 0
                for request in batch:
                    request.results, start = results[start:start + len(request.images)], start + len(request.images)
            except Exception as error:  # noqa: BLE001 - alone, each request fails or succeeds on its own
                if len(batch) == 1:
                    batch[0].error = error
                else:
                    for request in batch:
                        self._run_alone(request)
            for request in batch:
                request.done.set()

    def _run_alone(self, request: _Request) -> None:
        try:
            request.results = self.inner.analyze(request.images)
            self.batches.append(len(request.images))
        except Exception as error:  # noqa: BLE001 - handed to the study's thread
            request.error = error
