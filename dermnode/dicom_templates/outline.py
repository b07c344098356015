"""The lesion's planar geometry for the SR: its outline as a closed polyline and its long and short axes.

Coordinates are DICOM image coordinates (PS3.3 C.18.6.1.2): (column, row) in pixels, (0, 0) the
top-left corner of the top-left pixel, so the centre of pixel (r, c) is at (c + 0.5, r + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from skimage import measure

#: The outline keeps at most this many distinct points: enough to follow a lesion's border in a
#: viewer, few enough to read and edit (Douglas-Peucker, tolerance raised until it fits).
MAX_OUTLINE_POINTS = 100
_FIRST_TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class Axes:
    """Long axis (largest distance between two border points) and short axis (extent of the lesion
    perpendicular to the long axis), in mm when the pixel spacing is known, else in pixels."""

    long: float
    short: float


def _largest_border(mask: np.ndarray) -> np.ndarray:
    """The outer border of the largest connected region, as (row, column) points of pixel centres."""
    if not mask.any():
        raise ValueError("the mask is empty: it has no outline")
    labels = measure.label(mask, connectivity=2)
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    region = np.pad(labels == largest, 1)  # a border touching the image edge still closes
    contours = measure.find_contours(region.astype(np.uint8), 0.5)
    return max(contours, key=len) - 1.0  # undo the padding


def _image_coordinates(points: np.ndarray) -> np.ndarray:
    return points[:, ::-1] + 0.5  # (row, column) of pixel centres -> (column, row) image coordinates


def lesion_outline(mask: np.ndarray, max_points: int = MAX_OUTLINE_POINTS) -> np.ndarray:
    """The closed outline (N x 2 image coordinates, first point repeated last) of the largest region."""
    border = _largest_border(mask)
    tolerance = _FIRST_TOLERANCE_PX
    polygon = measure.approximate_polygon(border, tolerance)
    while len(polygon) - 1 > max_points:
        tolerance *= 1.5
        polygon = measure.approximate_polygon(border, tolerance)
    return _image_coordinates(polygon)


def lesion_axes(mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | None) -> Axes:
    """Long and short axis of the largest region, measured on its full (unsimplified) border."""
    row_mm, column_mm = pixel_spacing_mm or (1.0, 1.0)
    border = _image_coordinates(_largest_border(mask)) * np.array([column_mm, row_mm])
    hull = border[ConvexHull(border).vertices]  # the extreme points are on the convex hull
    distances = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    first, second = np.unravel_index(int(np.argmax(distances)), distances.shape)
    direction = (hull[second] - hull[first]) / distances[first, second]
    across = hull @ np.array([-direction[1], direction[0]])
    return Axes(long=float(distances[first, second]), short=float(across.max() - across.min()))
