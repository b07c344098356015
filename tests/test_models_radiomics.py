"""Radiomics extraction on real ISIC images and the feature selection for the classifier."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dermnode.models.images import load_mask, load_rgb
from dermnode.models.radiomics import (
    N_FEATURES,
    FeatureSelection,
    RadiomicsExtractor,
    benjamini_hochberg,
)

DATA = Path(os.environ.get("DERMNODE_TEST_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
TASK1 = DATA / "isic2018-task1"


def real_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if not (TASK1 / "images").is_dir():
        pytest.skip(f"ISIC data not found at {DATA} (set DERMNODE_TEST_DATA)")
    images = sorted((TASK1 / "images").glob("ISIC_*.jpg"))[:n]
    return [(load_rgb(p), load_mask(TASK1 / "masks" / f"{p.stem}_segmentation.png")) for p in images]


@pytest.fixture(scope="module")
def extractor() -> RadiomicsExtractor:
    return RadiomicsExtractor()


def test_real_image_gives_the_102_named_features(extractor):
    image, mask = real_pairs(1)[0]
    result = extractor.extract(image, mask)
    assert result.error is None
    assert len(result.features) == N_FEATURES
    prefixes = {name.split("_")[1] for name in result.features}
    assert prefixes == {"firstorder", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    # the lesion's area in pixels is the mask's pixel count
    assert result.features["original_shape2D_PixelSurface"] == pytest.approx(mask.sum())
    gray_inside = (image.astype(float) @ [0.299, 0.587, 0.114])[mask]
    assert result.features["original_firstorder_Mean"] == pytest.approx(gray_inside.mean(), rel=1e-4)


def test_pixel_spacing_and_resampling_keep_real_units(extractor):
    image, mask = real_pairs(1)[0]
    spaced = extractor.extract(image, mask, pixel_spacing_mm=(0.1, 0.2))
    area = spaced.features["original_shape2D_PixelSurface"]
    assert area == pytest.approx(mask.sum() * 0.02)
    # twice the resolution at half the spacing: resampled back to 512, the same lesion area in mm2
    big = extractor.extract(np.repeat(np.repeat(image, 2, 0), 2, 1), np.repeat(np.repeat(mask, 2, 0), 2, 1), (0.05, 0.1))
    assert big.features["original_shape2D_PixelSurface"] == pytest.approx(area, rel=0.01)


@pytest.mark.parametrize(
    "make_mask, reason",
    [
        (lambda m: m, "empty"),
        (lambda m: _square(m, 3), "too small"),
        (lambda m: np.zeros((5, 5), bool), "does not match"),
    ],
)
def test_failures_are_explicit_results(extractor, make_mask, reason):
    image, _ = real_pairs(1)[0]
    result = extractor.extract(image, make_mask(np.zeros(image.shape[:2], bool)))
    assert result.features is None
    assert reason in result.error


def _square(mask: np.ndarray, side: int) -> np.ndarray:
    mask[10 : 10 + side, 10 : 10 + side] = True
    return mask


def test_benjamini_hochberg_matches_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 -> *4/rank = 0.04, 0.06, 0.0533, 0.2 -> monotone 0.04, 0.0533, 0.0533, 0.2
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])


def test_selection_keeps_the_discriminating_features(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["MEL"] * 30 + ["NV"] * 30 + ["BCC"] * 30
    shift = {"MEL": 0.0, "NV": 3.0, "BCC": 6.0}
    features = [
        {"strong": shift[y] + rng.normal(), "weak": shift[y] / 6 + rng.normal(), "noise": rng.normal(), "constant": 1.0}
        for y in labels
    ]
    features.append(None)  # a failed extraction is skipped
    labels.append("NV")
    selection = FeatureSelection.fit(features, labels, k=2)
    assert selection.names == ["strong", "weak"]
    assert selection.n_samples == 90
    assert selection.tests["constant"]["p_corrected"] == 1.0
    assert selection.tests["strong"]["p_corrected"] < 1e-10
    vector = selection.transform(features[0])
    assert vector.shape == (2,)
    assert vector[0] == pytest.approx((features[0]["strong"] - selection.mean[0]) / selection.std[0])
    assert not selection.transform(None).any()
    selection.save(tmp_path / "selection.json")
    again = FeatureSelection.load(tmp_path / "selection.json")
    assert again == selection
    np.testing.assert_allclose(again.transform(features[5]), selection.transform(features[5]))


def test_selection_on_real_features(extractor):
    pairs = real_pairs(6)
    features = [extractor.extract(image, mask).features for image, mask in pairs]
    selection = FeatureSelection.fit(features, ["MEL", "NV"] * 3, k=9)
    assert len(selection.names) == 9
    assert set(selection.names) <= set(features[0])
    assert np.isfinite(selection.transform(features[0])).all()
