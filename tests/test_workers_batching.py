"""Studies run side by side share model batches (workers/batching.py), each getting its own analyses."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dermnode.contract import AnalysisStatus, LesionAnalysis
from dermnode.workers.batching import BatchingAnalyzer
from dermnode.workers.pipeline import SourceImage


class CountingAnalyzer:
    """Answers each image with its mean grey level as P(MEL); records the size of every call."""

    def __init__(self, fail_when_more_than: int | None = None) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.fail_when_more_than = fail_when_more_than

    def analyze(self, images):
        self.calls.append(len(images))
        self.threads.add(threading.current_thread().name)
        if self.fail_when_more_than is not None and len(images) > self.fail_when_more_than:
            raise RuntimeError("this batch breaks the model")
        return [LesionAnalysis(AnalysisStatus.ANALYSED, probabilities={"MEL": float(image.rgb.mean()) / 255})
                for image in images]

    def failed(self, reason: str, pixel_spacing_mm=None) -> LesionAnalysis:
        return LesionAnalysis(AnalysisStatus.FAILED, failure_reason=reason)


def study(level: int, images: int) -> list[SourceImage]:
    return [SourceImage(np.full((8, 8, 3), level + i, np.uint8)) for i in range(images)]


def analyse_side_by_side(analyzer, studies: list[list[SourceImage]]) -> list[list[LesionAnalysis]]:
    with ThreadPoolExecutor(len(studies)) as pool:
        return list(pool.map(analyzer.analyze, studies))


def test_three_studies_share_one_batch_and_each_gets_its_own_analyses() -> None:
    inner = CountingAnalyzer()
    batching = BatchingAnalyzer(inner, max_images=32, wait_seconds=1.0)
    studies = [study(10, 2), study(100, 3), study(200, 1)]
    results = analyse_side_by_side(batching, studies)
    assert inner.calls == [6] and inner.threads == {"dermnode-batcher"}
    for images, analyses in zip(studies, results):
        assert [a.probabilities["MEL"] for a in analyses] == pytest.approx([im.rgb.mean() / 255 for im in images])
    assert batching.failed("why").status is AnalysisStatus.FAILED  # the rest of the Analyzer is the inner one's


def test_a_batch_stops_filling_at_its_size() -> None:
    inner = CountingAnalyzer()
    batching = BatchingAnalyzer(inner, max_images=4, wait_seconds=1.0)
    analyse_side_by_side(batching, [study(10 * i, 2) for i in range(4)])
    assert sorted(inner.calls) == [4, 4]


def test_a_batch_that_raises_is_run_again_study_by_study() -> None:
    inner = CountingAnalyzer(fail_when_more_than=3)
    batching = BatchingAnalyzer(inner, max_images=32, wait_seconds=1.0)
    with ThreadPoolExecutor(2) as pool:
        small = pool.submit(batching.analyze, study(10, 2))
        large = pool.submit(batching.analyze, study(50, 4))
        assert len(small.result(timeout=30)) == 2
        with pytest.raises(RuntimeError, match="breaks the model"):
            large.result(timeout=30)
