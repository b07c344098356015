"""Pictures for the pages, drawn on the server: the spooled image with the lesion from the node's SEG.

``thumbnail`` is the image scaled down with the lesion's outline; ``overlay`` is the image at up to
``OVERLAY_SIZE`` pixels with the lesion filled in translucent colour and outlined. The mask is
read from the SEG file the node wrote (pydicom unpacks its one binary frame); without a SEG (no
lesion, not analysable, pruned) the image is drawn without outline.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread

THUMBNAIL_SIZE = 160
OVERLAY_SIZE = 768
OUTLINE = (0, 255, 128)
FILL = np.array([0, 255, 128], dtype=np.float32)


class NoImage(LookupError):
    """The spooled image is gone (pruned) or cannot be decoded."""


def source_rgb(path: Path) -> np.ndarray:
    """The spooled image as RGB uint8 rows x columns x 3."""
    try:
        ds = dcmread(path)
        pixels = ds.pixel_array
    except (OSError, ValueError, AttributeError, RuntimeError) as error:
        raise NoImage(f"{path.name}: {type(error).__name__}") from None
    if pixels.ndim == 4:  # several frames: the first
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    if pixels.dtype != np.uint8:
        top = float(pixels.max()) or 1.0
        pixels = (pixels.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    return pixels[..., :3]


def seg_mask(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The lesion mask of a SEG file at ``shape`` (rows, columns), or None when there is none to read."""
    if path is None or not path.is_file():
        return None
    try:
        frames = dcmread(path).pixel_array
    except (OSError, ValueError, AttributeError, RuntimeError):
        return None
    mask = (frames if frames.ndim == 2 else frames.max(axis=0)) > 0
    if mask.shape != shape:
        mask = np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.NEAREST))
    return mask


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` that touch its outside, ``width`` pixels thick."""
    inner = mask.copy()
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


def _scaled(rgb: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    image = Image.fromarray(rgb)
    image.thumbnail((size, size), Image.LANCZOS)
    small = np.asarray(image).copy()
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask).resize(image.size, Image.NEAREST))
    return small, mask


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnail(source: Path, seg: Path | None, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG: the image at most ``size`` pixels wide or high, the lesion outlined."""
    rgb = source_rgb(source)
    pixels, mask = _scaled(rgb, seg_mask(seg, rgb.shape[:2]), size)
    if mask is not None:
        pixels[outline(mask, width=2)] = OUTLINE
    return _png(pixels)


def overlay(source: Path, seg: Path | None, size: int = OVERLAY_SIZE) -> bytes:
    """PNG: the image at most ``size`` pixels, the lesion filled in translucent colour and outlined."""
    rgb = source_rgb(source)
    pixels, mask = _scaled(rgb, seg_mask(seg, rgb.shape[:2]), size)
    if mask is not None:
        blend = pixels.astype(np.float32)
        blend[mask] = 0.65 * blend[mask] + 0.35 * FILL
        pixels = blend.astype(np.uint8)
        pixels[outline(mask, width=2)] = OUTLINE
    return _png(pixels)


def image_only(source: Path, size: int = OVERLAY_SIZE) -> bytes:
    """PNG: the image at most ``size`` pixels, nothing drawn on it."""
    pixels, _ = _scaled(source_rgb(source), None, size)
    return _png(pixels)
