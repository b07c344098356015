"""Helpers for the worker tests: an analysis double and spooled studies of odd instances."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from pydicom import Dataset
from pydicom.encaps import encapsulate, generate_frames

from dermnode.contract import CLASS_CODES, AnalysisStatus, LesionAnalysis, ModelIdentity
from dermnode.node.settings import Settings
from dermnode.node.spool import Spool
from dermnode.workers.pipeline import Analyzer
from node_support import make_dataset


class DarkAnalyzer(Analyzer):
    """Lesion = pixels darker than the median; P(MEL) 0.5, so the veto fires."""

    def __init__(self) -> None:
        super().__init__(None, None, None, None)
        self.calls = 0
        self.analysed: list[str] = []  # SOP Instance UIDs, in the order analysed

    @property
    def identities(self) -> tuple[ModelIdentity, ...]:
        return (ModelIdentity("analysis-double", "test", "0" * 64),)

    def analyze(self, images):
        self.calls += 1
        self.analysed += [str(im.dataset.SOPInstanceUID) for im in images]
        probabilities = dict.fromkeys(CLASS_CODES, 0.0)
        probabilities.update(NV=0.5, MEL=0.5)
        return [LesionAnalysis(AnalysisStatus.ANALYSED, mask=im.rgb.mean(axis=2) < np.median(im.rgb.mean(axis=2)),
                               segmentation_confidence=0.8, probabilities=dict(probabilities), bcc_probability=0.7,
                               models=self.identities, seconds={"segmentation": 0.01})
                for im in images]


def truncate_pixels(ds: Dataset) -> None:
    """Cut the JPEG stream to a third: the header checks pass, decoding fails."""
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])


def spool_study(settings: Settings, folder: Path, study_uid: str, edits: list[Callable[[Dataset], None] | None],
                first_seed: int = 0) -> list[Dataset]:
    """One spooled instance of ``study_uid`` per entry of ``edits`` (each edit applied before spooling)."""
    spool = Spool(settings.spool_dir)
    instances = []
    for n, edit in enumerate(edits, start=first_seed):
        ds = make_dataset(folder, f"IMG{n}", study_uid=study_uid, seed=n)
        if edit is not None:
            edit(ds)
        spool.store(ds)
        instances.append(ds)
    return instances
