"""The input gate: images that are not analysable dermoscopy get a reason, never a diagnosis.

Two parts. :func:`image_problem` looks at the pixels alone (cheap, before segmentation): too small,
greyscale, blank, over-exposed, very blurred. :class:`FeatureGate` looks at what the classifier's
image branch makes of the lesion crop: a Mahalanobis distance to the training images' features
above the gate's threshold (a margin above a high quantile of the validation images' distances) means the picture
is unlike any dermoscopy the model has seen (a photograph of a face, a cat, a fundus, a slide). A gate
``with_style`` reads, besides the pooled features (what the crop shows), the style statistics of the
branch's first two stages (how it looks: each channel's mean and spread), which set flowers, motorcycles
and rockets further apart from dermoscopy (`dermnode evaluate gate`).

The limits were set on 400-600 of the data folder's images (ISIC/HAM10000: smallest side 150 px,
75th percentile of chroma at least 8, contrast at least 6, fine detail at least 0.51 grey levels,
while a Gaussian blur of 4 % of the image's side leaves at most 0.20) with a margin, so that real
dermoscopy passes; ``dermnode evaluate gate`` reports the refusal rates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from dermnode.models.images import as_rgb

NOT_ANALYSABLE = "not analysable"
#: The feature gate's limit: GATE_MARGIN x the GATE_QUANTILE of the validation images' distances.
GATE_QUANTILE, GATE_MARGIN = 0.995, 1.4
#: An ensemble's feature gates refuse this share of its validation dermoscopy (0.6.0's refused 4 of 2422)
FALSE_REFUSAL_BUDGET = 0.002


@dataclass(frozen=True)
class GateLimits:
    min_side: int = 64  # pixels, the smaller side
    min_chroma: float = 4.0  # 75th percentile of max(R,G,B) - min(R,G,B), 0-255: below = greyscale
    min_contrast: float = 3.0  # standard deviation of the luminance, 0-255: below = blank
    max_overexposed: float = 0.5  # share of pixels at luminance >= 250
    max_dark: float = 12.0  # mean luminance at or below = too dark to see anything
    min_sharpness: float = 0.35  # fine detail: mean |luminance - its Gaussian blur (sigma 1 px)| at 256 px, grey levels


def image_measures(image: np.ndarray) -> dict[str, float]:
    """The measures the limits apply to, on a copy no larger than 256 px."""
    rgb = as_rgb(image)
    small = Image.fromarray(rgb)
    small.thumbnail((256, 256))
    pixels = np.asarray(small).astype(np.float32)
    luminance = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    contrast = float(luminance.std())
    return {
        "side": float(min(rgb.shape[:2])),
        "chroma": float(np.percentile(pixels.max(axis=2) - pixels.min(axis=2), 75)),
        "contrast": contrast,
        "overexposed": float((luminance >= 250).mean()),
        "brightness": float(luminance.mean()),
        "sharpness": float(np.abs(luminance - ndimage.gaussian_filter(luminance, 1.0)).mean()),
    }


def image_problem(image: np.ndarray, limits: GateLimits = GateLimits()) -> str | None:
    """Why the image is not analysable dermoscopy (``"not analysable: <reason>"``), or None."""
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return f"{NOT_ANALYSABLE}: greyscale image (dermoscopy is a colour photograph)"
    if min(image.shape[:2]) < limits.min_side:
        return f"{NOT_ANALYSABLE}: image too small ({image.shape[1]}x{image.shape[0]} pixels, at least {limits.min_side} needed)"
    m = image_measures(image)
    if m["overexposed"] > limits.max_overexposed:
        return f"{NOT_ANALYSABLE}: over-exposed image ({m['overexposed']:.0%} of pixels saturated)"
    if m["brightness"] <= limits.max_dark:
        return f"{NOT_ANALYSABLE}: image too dark"
    if m["chroma"] < limits.min_chroma:
        return f"{NOT_ANALYSABLE}: greyscale image (no colour; dermoscopy is a colour photograph)"
    if m["contrast"] < limits.min_contrast:
        return f"{NOT_ANALYSABLE}: blank image (no contrast)"
    if m["sharpness"] < limits.min_sharpness:
        return f"{NOT_ANALYSABLE}: image very blurred"
    return None


def budget_scale(atypicality: np.ndarray, budget: float = FALSE_REFUSAL_BUDGET) -> float:
    """The factor for every feature gate's limit under which a ``budget`` share of these atypicalities
    (of real dermoscopy, the largest over an ensemble's gates) stays above the limit."""
    return float(np.quantile(np.asarray(atypicality, dtype=float), 1.0 - budget))


def atypicality_problems(atypicality: np.ndarray) -> list[str | None]:
    """The refusal of each image whose atypicality (distance / threshold) is above 1, else None."""
    return [f"{NOT_ANALYSABLE}: does not look like a dermoscopic image (atypicality {a:.1f}x the limit)" if a > 1 else None
            for a in atypicality]


@dataclass(frozen=True)
class FeatureGate:
    """Mahalanobis distance of image-branch features to the training images' features."""

    mean: np.ndarray  # F
    precision: np.ndarray  # F x F (inverse of the shrunk covariance)
    threshold: float  # distances above it are refused
    with_style: bool = False  # the features are ImageBranch.with_style's (else the pooled features alone)

    @classmethod
    def fit(
        cls, train_features: np.ndarray, validation_features: np.ndarray,
        quantile: float = GATE_QUANTILE, margin: float = GATE_MARGIN, with_style: bool = False,
    ) -> FeatureGate:
        """Mean and Ledoit-Wolf covariance on training features; threshold = ``margin`` x the ``quantile``
        of the validation features' distances. At margin 1 about 1 - quantile of real dermoscopy would
        be refused, mostly rare lesions (a hairy vascular lesion at 1.1x); the pictures that are not
        dermoscopy that the gate catches sit at 1.5x and beyond, hence the margin."""
        from sklearn.covariance import LedoitWolf

        estimate = LedoitWolf().fit(np.asarray(train_features, dtype=np.float64))
        gate = cls(estimate.location_.astype(np.float32), estimate.precision_.astype(np.float32), 0.0, with_style)
        threshold = margin * float(np.quantile(gate.distances(validation_features), quantile))
        return replace(gate, threshold=threshold)

    def distances(self, features: np.ndarray) -> np.ndarray:
        centred = np.asarray(features, dtype=np.float32) - self.mean
        return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", centred, self.precision, centred), 0.0))

    def scaled(self, factor: float) -> FeatureGate:
        """The same gate with its limit multiplied by ``factor``."""
        return replace(self, threshold=self.threshold * factor)

    def atypicality(self, features: np.ndarray) -> np.ndarray:
        """Distances as multiples of the threshold (above 1: refused)."""
        return self.distances(features) / self.threshold

    def problems(self, features: np.ndarray) -> list[str | None]:
        return atypicality_problems(self.atypicality(features))

    def as_payload(self) -> dict:
        import torch

        return {"mean": torch.from_numpy(self.mean), "precision": torch.from_numpy(self.precision),
                "threshold": torch.tensor(self.threshold), "with_style": self.with_style}

    @classmethod
    def from_payload(cls, payload: dict) -> FeatureGate:
        return cls(payload["mean"].float().numpy(), payload["precision"].float().numpy(), float(payload["threshold"]),
                   bool(payload.get("with_style", False)))
