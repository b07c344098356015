"""Image loading and resizing helpers shared by the models (numpy in, numpy out, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def load_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (rows x cols x 3)."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


def load_mask(path: Path) -> np.ndarray:
    """A mask file (0/255 or 0/1 PNG) as a boolean array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept grayscale (HxW or HxWx1), RGB or RGBA uint8 and return RGB uint8; reject anything else."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"expected an image of rows x cols (x 1, 3 or 4 channels), got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (or gray) uint8 to a float32 luminance image (ITU-R 601 weights, as PIL's "L")."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    rgb = as_rgb(image).astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` = (rows, cols) with bilinear interpolation."""
    rows, cols = size
    return np.array(Image.fromarray(as_rgb(image)).resize((cols, rows), Image.BILINEAR), dtype=np.uint8)


def resize_gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float image (gray levels or probabilities) to ``size`` = (rows, cols) with bilinear interpolation."""
    rows, cols = size
    return np.asarray(Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize((cols, rows), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to ``size`` = (rows, cols) with nearest-neighbour interpolation."""
    rows, cols = size
    image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    return np.asarray(image.resize((cols, rows), Image.NEAREST)) > 127

