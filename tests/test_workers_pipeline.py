"""The analysis pipeline's plumbing: batching, order, no-lesion and per-image failures.

The four models are small doubles here (this test is about how the Analyzer chains them); the
real models run in test_workers_analyze.py and the end-to-end test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from dermnode.contract import CLASS_CODES, AnalysisStatus, ModelIdentity, PatientMetadata
from dermnode.workers.pipeline import STAGES, Analyzer, SourceImage


@dataclass
class Segmentation:
    mask: np.ndarray | None
    confidence: float | None


class DarkSegmenter:
    """Lesion = pixels darker than 100; raises on an all-red image; counts its batch sizes."""

    identity = ModelIdentity("segmentation", "test", "0" * 64)

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, images):
        self.batches.append(len(images))
        out = []
        for image in images:
            if (image[..., 0] == 255).all() and (image[..., 1] == 0).all():
                raise ValueError("red image")
            mask = image.mean(axis=2) < 100
            out.append(Segmentation(mask if mask.any() else None, 0.9 if mask.any() else 0.1))
        return out


@dataclass
class Features:
    features: dict | None
    error: str | None = None


class AreaRadiomics:
    def extract(self, image, mask, pixel_spacing_mm=None):
        return Features({"original_shape2D_PixelSurface": float(mask.sum()), "other": 1.0})


class SizeClassifier:
    """P(MEL) grows with the lesion area, the rest is NV; remembers what it was given."""

    identity = ModelIdentity("classifier", "test", "1" * 64)
    selected_features = ("original_shape2D_PixelSurface",)

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def atypical(self, images, masks):
        """Its feature gate: an image with a green corner is not dermoscopy."""
        return ["not analysable: green corner" if image[0, 0, 1] == 255 else None for image in images]

    def predict(self, images, masks, metadata, radiomics):
        self.calls.append((len(images), [m.sum() for m in masks], list(metadata), list(radiomics)))
        out = []
        for mask in masks:
            mel = min(0.9, mask.mean() * 2)
            probabilities = dict.fromkeys(CLASS_CODES, 0.0)
            probabilities.update(MEL=mel, NV=1 - mel)
            out.append(probabilities)
        return out


class ConstantBccSk:
    identity = ModelIdentity("bcc_sk", "test", "2" * 64)

    def predict(self, images):
        return [0.25 for _ in images]


def image(kind: str, size: int = 64) -> np.ndarray:
    rgb = np.full((size, size, 3), 220, np.uint8)
    if kind == "big":
        rgb[8:56, 8:56] = 40
    elif kind == "small":
        rgb[28:36, 28:36] = 40
    elif kind == "red":
        rgb[:] = (255, 0, 0)
    if kind in ("blue corner", "green corner"):
        rgb[8:56, 8:56] = 40
        rgb[0, 0] = (0, 0, 255) if kind == "blue corner" else (0, 255, 0)
    return rgb


@pytest.fixture
def analyzer() -> Analyzer:
    # The synthetic images are flat grey squares that the real pixel gate would refuse: this
    # double refuses only images with a blue corner.
    return Analyzer(DarkSegmenter(), AreaRadiomics(), SizeClassifier(), ConstantBccSk(), veto_threshold=0.3, batch_size=3,
                    pixel_gate=lambda rgb: "not analysable: blue corner" if tuple(rgb[0, 0]) == (0, 0, 255) else None)


def test_results_come_back_in_order_with_veto_and_stage_seconds(analyzer: Analyzer) -> None:
    meta = PatientMetadata(55.0, "male", "back")
    images = [SourceImage(image("big"), meta, (0.1, 0.1), "big"), SourceImage(image("small"), name="small")]
    big, small = analyzer.analyze(images)
    assert big.status is AnalysisStatus.ANALYSED and small.status is AnalysisStatus.ANALYSED
    assert big.mask.shape == (64, 64) and big.mask.sum() == 48 * 48
    assert big.veto is True and small.veto is False  # P(MEL) from the area: 1.125 capped at 0.9 vs 0.03
    assert big.top_class == "MEL" and small.top_class != "MEL"
    assert big.radiomics == {"original_shape2D_PixelSurface": 48.0 * 48.0}
    assert big.lesion_area == pytest.approx(48 * 48 * 0.01) and big.lesion_area_unit == "mm2"
    assert big.bcc_probability == 0.25 and big.bcc_sk_call == "SK"
    assert [m.name for m in big.models] == ["segmentation", "classifier", "bcc_sk"]
    assert set(big.seconds) == set(STAGES)
    assert analyzer.classifier.calls[0][2][0] == meta


def test_no_lesion_gets_no_mask_and_no_diagnosis(analyzer: Analyzer) -> None:
    (blank,) = analyzer.analyze([SourceImage(image("blank"), name="blank")])
    assert blank.status is AnalysisStatus.NO_LESION
    assert blank.mask is None and blank.probabilities == {} and blank.veto is None
    assert blank.segmentation_confidence == 0.1
    assert analyzer.classifier.calls == []  # nothing to classify


def test_one_failing_image_does_not_sink_the_batch(analyzer: Analyzer) -> None:
    images = [SourceImage(image(kind), name=kind) for kind in ("big", "red", "small", "blank", "big")]
    results = analyzer.analyze(images)
    assert [r.status for r in results] == [
        AnalysisStatus.ANALYSED, AnalysisStatus.FAILED, AnalysisStatus.ANALYSED,
        AnalysisStatus.NO_LESION, AnalysisStatus.ANALYSED,
    ]
    assert "segmentation failed" in results[1].failure_reason and "red image" in results[1].failure_reason
    assert results[1].models  # a failed analysis still names the models
    # batches of 3: the first batch failed whole, was retried image by image, then the last two
    assert analyzer.segmenter.batches == [3, 1, 1, 1, 2]


def test_failed_helper_for_undecodable_images(analyzer: Analyzer) -> None:
    failed = analyzer.failed("the image could not be decoded: truncated JPEG", (0.05, 0.05))
    assert failed.status is AnalysisStatus.FAILED and failed.veto is None
    assert failed.failure_reason.endswith("truncated JPEG") and failed.pixel_spacing_mm == (0.05, 0.05)


def test_the_input_gate_refuses_before_any_diagnosis(analyzer: Analyzer) -> None:
    kinds = ("big", "blue corner", "green corner", "small")
    results = analyzer.analyze([SourceImage(image(kind), name=kind) for kind in kinds])
    assert [r.status for r in results] == [
        AnalysisStatus.ANALYSED, AnalysisStatus.NOT_ANALYSABLE, AnalysisStatus.NOT_ANALYSABLE, AnalysisStatus.ANALYSED,
    ]
    pixel, feature = results[1], results[2]
    assert pixel.failure_reason == "not analysable: blue corner" and feature.failure_reason == "not analysable: green corner"
    for refused in (pixel, feature):
        assert refused.mask is None and refused.probabilities == {} and refused.veto is None and refused.models
    assert sum(analyzer.segmenter.batches) == 3  # the pixel gate's refusal was never segmented
    assert sum(call[0] for call in analyzer.classifier.calls) == 2  # the feature gate's refusal was never classified


def test_the_real_pixel_gate_refuses_a_greyscale_image() -> None:
    analyzer = Analyzer(DarkSegmenter(), AreaRadiomics(), SizeClassifier(), ConstantBccSk())
    (grey,) = analyzer.analyze([SourceImage(image("big", size=128), name="grey")])
    assert grey.status is AnalysisStatus.NOT_ANALYSABLE and "greyscale" in grey.failure_reason
    assert analyzer.segmenter.batches == []
