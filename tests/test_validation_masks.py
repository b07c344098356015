"""Dice and IoU of one case, and the reasons a case with a truth mask is not scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermnode.validation.masks import case_overlap


def png(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray((mask * 255).astype(np.uint8)).save(path)
    return path


def test_overlap_by_hand(tmp_path: Path) -> None:
    truth = np.zeros((4, 5), bool)
    truth[1:3, 1:3] = True  # 4 pixels
    predicted = np.zeros((4, 5), bool)
    predicted[1:3, 2:4] = True  # 4 pixels, 2 shared
    overlap = case_overlap(png(tmp_path / "t.png", truth), predicted)
    assert overlap.dice == pytest.approx(2 * 2 / 8) and overlap.iou == pytest.approx(2 / 6) and overlap.note is None


def test_cases_that_cannot_be_scored_say_why(tmp_path: Path) -> None:
    truth = png(tmp_path / "t.png", np.ones((4, 5), bool))
    assert case_overlap(None, np.ones((4, 5), bool)) is None
    assert case_overlap(truth, None).note == "the node's mask is not available"
    assert case_overlap(truth, np.ones((5, 4), bool)).note == "truth mask is 5x4, the image 4x5"
    assert case_overlap(tmp_path / "missing.png", np.ones((4, 5), bool)).note.startswith("truth mask unreadable")
    (tmp_path / "broken.dcm").write_bytes(b"not a DICOM file")
    assert case_overlap(truth, tmp_path / "broken.dcm").note.startswith("the node's SEG is unreadable")
