"""The input gate: greyscale, blank, over-exposed, tiny and very blurred images are not analysable;
real dermoscopy passes. Real photographs that are not skin come from scikit-image's and
scikit-learn's samples."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import ndimage

from dermnode.models.dataset_index import load_records, one_row_per_image
from dermnode.models.images import load_rgb
from dermnode.models.input_gate.checks import FeatureGate, image_problem
from dermnode.models.model_card import STARTER_DIR
from peers import shared_data

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) provides the sample photographs")


@pytest.fixture(scope="module")
def dermoscopy():
    records = one_row_per_image(load_records(shared_data()))
    return [load_rgb(r.image_path) for r in random.Random(7).sample(records, 300)]


@pytest.mark.parametrize("name", ["camera", "coins", "moon", "brick", "gravel", "page", "text"])
def test_greyscale_photographs_are_not_analysable(name):
    image = getattr(skimage_data, name)()
    assert "greyscale" in image_problem(image)
    assert "greyscale" in image_problem(np.repeat(image[..., None], 3, axis=2))  # grey stored as RGB


def test_greyscale_conversion_of_real_dermoscopy_is_refused(dermoscopy):
    grey = (np.asarray(dermoscopy[0], np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    assert image_problem(np.repeat(grey[..., None], 3, axis=2)).startswith("not analysable: greyscale")


def test_blank_dark_overexposed_tiny_and_blurred_frames_are_refused(dermoscopy):
    assert "blank" in image_problem(np.full((300, 300, 3), (180, 120, 100), np.uint8))
    assert "dark" in image_problem(np.random.default_rng(0).integers(0, 20, (300, 300, 3)).astype(np.uint8))
    assert "over-exposed" in image_problem(np.clip(dermoscopy[1].astype(int) + 250, 0, 255).astype(np.uint8))
    assert "too small" in image_problem(dermoscopy[2][:40, :40])
    sigma = 0.04 * min(dermoscopy[3].shape[:2])  # 4 % of the side: a lesion out of focus
    blurred = np.stack([ndimage.gaussian_filter(dermoscopy[3][..., c].astype(float), sigma) for c in range(3)], -1)
    assert "blurred" in image_problem(blurred.astype(np.uint8))


def test_real_dermoscopy_passes_the_pixel_checks(dermoscopy):
    refused = [image_problem(image) for image in dermoscopy]
    assert sum(r is not None for r in refused) <= 3, [r for r in refused if r]  # at most 1 % of 300


def test_feature_gate_refuses_far_features_and_keeps_near_ones():
    rng = np.random.default_rng(0)
    train, validation = rng.normal(size=(500, 16)), rng.normal(size=(200, 16))
    gate = FeatureGate.fit(train, validation, quantile=0.99)
    assert sum(p is not None for p in gate.problems(validation)) <= 3
    far = gate.problems(rng.normal(loc=3.0, size=(20, 16)))
    assert all(p and p.startswith("not analysable: does not look like") for p in far)
    again = FeatureGate.from_payload(gate.as_payload())
    assert np.allclose(again.distances(validation), gate.distances(validation), rtol=1e-4) and not again.with_style
    styled = FeatureGate.fit(train, validation, with_style=True)
    assert FeatureGate.from_payload(styled.as_payload()).with_style and styled.scaled(0.5).with_style


def test_gate_limits_scaled_by_the_budget_scale_refuse_the_budget_share_of_validation():
    from dermnode.models.input_gate.checks import budget_scale

    rng = np.random.default_rng(0)
    train, validation = rng.normal(size=(500, 16)), rng.normal(size=(2000, 16))
    gates = [FeatureGate.fit(train, validation), FeatureGate.fit(train + 0.2, validation)]
    largest = np.max([g.atypicality(validation) for g in gates], axis=0)  # as an ensemble decides
    assert (largest > 1).mean() < 0.001  # each member's margin lets nearly every validation case through
    scale = budget_scale(largest, budget=0.01)
    assert scale < 1
    scaled = [g.scaled(scale) for g in gates]
    refused = (np.max([g.atypicality(validation) for g in scaled], axis=0) > 1).mean()
    assert refused == pytest.approx(0.01, abs=0.001)
    assert np.allclose(scaled[0].distances(validation), gates[0].distances(validation))  # only the limit moves


@pytest.mark.skipif(not (STARTER_DIR / "classifier" / "model_card.json").is_file(), reason="no starter classifier yet")
def test_starter_gate_refuses_photographs_and_passes_dermoscopy(dermoscopy):
    from dermnode.models.classifier import FusionClassifier
    from dermnode.models.input_gate.evaluate import gate_decisions

    model = FusionClassifier.load()
    assert len(model.gates) == len(model.members)  # one feature gate per network of the ensemble
    from sklearn.datasets import load_sample_images

    photos = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.rocket(), skimage_data.hubble_deep_field(),
              skimage_data.stereo_motorcycle()[0], *load_sample_images().images]  # + a temple and a flower
    decisions = gate_decisions(model, photos, progress=False)
    assert all(d and d.startswith("not analysable") for d in decisions), decisions
    refused = [d for d in gate_decisions(model, dermoscopy[:150], progress=False) if d]
    assert len(refused) <= 2, refused  # about 0.2 % on validation; 150 images may carry one
