"""Radiomic features of the lesion (pyradiomics, 2D) and their selection for the classifier.

Extraction follows the seed paper: the 102 features of the firstorder, shape2D, glcm, glrlm, glszm,
gldm and ngtdm classes, computed by pyradiomics (the ``pyradiomics-bhklab`` distribution, imported as
``radiomics``) on the grayscale image inside the lesion mask, named as pyradiomics names them
(e.g. ``original_firstorder_Mean``).

Settings (documented in the model cards that use them):

* gray levels: ITU-R 601 luminance on 0..255, fixed bin width 25 (pyradiomics' default);
* images larger than ``working_size`` on their longer side are resampled to that size (bilinear for
  the image, nearest for the mask) before extraction, with the pixel spacing scaled to match, so
  shape features stay in the source's units (mm when DICOM PixelSpacing is known, else source
  pixels) and a 512x512 image extracts in well under 0.3 s on one CPU core.

Selection: a Kruskal-Wallis test of each feature across diagnoses on the development split, p-values
corrected by Benjamini-Hochberg, the k features with the smallest corrected p kept (default 9, as in
the paper), with their mean and standard deviation for z-normalisation.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dermnode.models.images import resize_gray, resize_mask, to_gray

FEATURE_CLASSES: tuple[str, ...] = ("firstorder", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
N_FEATURES = 102
BIN_WIDTH = 25.0
WORKING_SIZE = 512
MIN_MASK_PIXELS = 16


@dataclass
class RadiomicsResult:
    features: dict[str, float] | None  # all 102, pyradiomics names; None when extraction failed
    error: str | None  # why extraction failed (empty or tiny mask, pyradiomics error)


class RadiomicsExtractor:
    """Extract the paper's 102 2D radiomic features from an image and a lesion mask."""

    def __init__(self, bin_width: float = BIN_WIDTH, working_size: int = WORKING_SIZE):
        import radiomics
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)
        logging.getLogger("radiomics").setLevel(logging.ERROR)
        self.bin_width = bin_width
        self.working_size = working_size
        self._extractor = featureextractor.RadiomicsFeatureExtractor(
            force2D=True, binWidth=bin_width, additionalInfo=False
        )
        self._extractor.disableAllFeatures()
        for name in FEATURE_CLASSES:
            self._extractor.enableFeatureClassByName(name)

    @property
    def settings(self) -> dict:
        return {
            "feature_classes": list(FEATURE_CLASSES),
            "bin_width": self.bin_width,
            "working_size": self.working_size,
            "gray": "ITU-R 601 luminance 0..255",
        }

    def extract(
        self, image: np.ndarray, mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | None = None
    ) -> RadiomicsResult:
        """Features of ``image`` (RGB or gray) inside ``mask`` (bool, same rows x cols).

        ``pixel_spacing_mm`` is DICOM PixelSpacing order: (row spacing, column spacing).
        Failure (empty or tiny mask, shape mismatch, pyradiomics error) comes back as ``error``.
        """
        import SimpleITK as sitk

        gray = to_gray(image)
        mask = np.asarray(mask, dtype=bool) if mask is not None else None
        if mask is None or mask.shape != gray.shape:
            shape = None if mask is None else mask.shape
            return RadiomicsResult(None, f"mask shape {shape} does not match image shape {gray.shape}")
        n_pixels = int(mask.sum())
        if n_pixels == 0:
            return RadiomicsResult(None, "empty mask: no lesion pixels")
        if n_pixels < MIN_MASK_PIXELS:
            return RadiomicsResult(None, f"mask too small: {n_pixels} pixels (< {MIN_MASK_PIXELS})")
        row_mm, col_mm = pixel_spacing_mm if pixel_spacing_mm is not None else (1.0, 1.0)
        rows, cols = gray.shape
        scale = self.working_size / max(rows, cols)
        if scale < 1.0:
            size = (max(2, round(rows * scale)), max(2, round(cols * scale)))
            row_mm, col_mm = row_mm * rows / size[0], col_mm * cols / size[1]
            gray, mask = resize_gray(gray, size), resize_mask(mask, size)
            if int(mask.sum()) < MIN_MASK_PIXELS:
                return RadiomicsResult(None, f"mask too small after resampling to {size}")
        sitk_image = sitk.GetImageFromArray(gray[None].astype(np.float32))
        sitk_mask = sitk.GetImageFromArray(mask[None].astype(np.uint8))
        for item in (sitk_image, sitk_mask):
            item.SetSpacing((float(col_mm), float(row_mm), 1.0))
        try:
            raw = self._extractor.execute(sitk_image, sitk_mask, label=1)
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as error:
            return RadiomicsResult(None, f"pyradiomics failed: {error}")
        features = {key: float(value) for key, value in raw.items() if key.startswith("original_")}
        if len(features) != N_FEATURES:
            return RadiomicsResult(None, f"pyradiomics returned {len(features)} features, expected {N_FEATURES}")
        return RadiomicsResult(features, None)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class FeatureSelection:
    """The k radiomic features kept for the classifier, with z-normalisation statistics.

    ``tests`` holds, for every candidate feature, the Kruskal-Wallis H statistic, raw p and
    Benjamini-Hochberg corrected p on the development data.
    """

    names: list[str]
    mean: list[float]
    std: list[float]
    k: int
    test: str
    n_samples: int
    classes: list[str]
    tests: dict[str, dict[str, float]]

    @classmethod
    def fit(cls, features: list[dict[str, float] | None], labels: list[str | None], k: int = 9) -> FeatureSelection:
        """Rank features by a Kruskal-Wallis test across ``labels``; keep the k with the smallest
        corrected p (ties broken by the larger H). Samples whose features or label are None are skipped."""
        from scipy.stats import kruskal

        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        pairs = [(f, y) for f, y in zip(features, labels) if f is not None and y is not None]
        classes = sorted({y for _, y in pairs})
        if len(classes) < 2:
            raise ValueError(f"feature selection needs at least two diagnoses, got {classes}")
        names = sorted(set.intersection(*(set(f) for f, _ in pairs)))
        if len(names) < k:
            raise ValueError(f"only {len(names)} features common to all samples, cannot keep {k}")
        matrix = np.array([[f[name] for name in names] for f, _ in pairs], dtype=float)
        y = np.array([label for _, label in pairs])
        stats, raw_p = np.zeros(len(names)), np.ones(len(names))
        for j in range(len(names)):
            groups = [matrix[y == c, j] for c in classes]
            groups = [g[np.isfinite(g)] for g in groups]
            groups = [g for g in groups if len(g) > 0]
            if len(groups) < 2 or np.ptp(np.concatenate(groups)) == 0:
                continue  # constant or missing feature: H = 0, p = 1
            stats[j], raw_p[j] = kruskal(*groups)
        corrected = benjamini_hochberg(raw_p)
        order = sorted(range(len(names)), key=lambda j: (corrected[j], -stats[j], names[j]))[:k]
        kept = matrix[:, order]
        mean = np.nanmean(kept, axis=0)
        std = np.nanstd(kept, axis=0)
        std[~np.isfinite(std) | (std == 0)] = 1.0
        tests = {
            name: {"statistic": float(stats[j]), "p_value": float(raw_p[j]), "p_corrected": float(corrected[j])}
            for j, name in enumerate(names)
        }
        return cls(
            names=[names[j] for j in order],
            mean=[float(v) for v in mean],
            std=[float(v) for v in std],
            k=k,
            test="Kruskal-Wallis across diagnoses, Benjamini-Hochberg corrected",
            n_samples=len(pairs),
            classes=classes,
            tests=tests,
        )

    def transform(self, features: dict[str, float] | None) -> np.ndarray:
        """The z-normalised selected features (float32, length k); zeros when ``features`` is None.
        A missing or non-finite value becomes 0 (the training mean)."""
        out = np.zeros(len(self.names), dtype=np.float32)
        if features is None:
            return out
        for i, (name, mean, std) in enumerate(zip(self.names, self.mean, self.std)):
            value = features.get(name)
            if value is not None and math.isfinite(value):
                out[i] = (value - mean) / std
        return out

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> FeatureSelection:
        return cls(**json.loads(Path(path).read_text()))
