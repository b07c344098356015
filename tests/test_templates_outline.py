"""The lesion outline and axes written into the SR (dicom_templates.outline)."""

from __future__ import annotations

import numpy as np
import pytest

from dermnode.dicom_templates.outline import MAX_OUTLINE_POINTS, lesion_axes, lesion_outline


def ellipse(rows: int = 100, columns: int = 200, half_long: int = 60, half_short: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :columns]
    return ((xx - columns // 2) / half_long) ** 2 + ((yy - rows // 2) / half_short) ** 2 <= 1


def test_axes_of_an_ellipse_in_pixels_and_in_mm():
    mask = ellipse()  # 121 pixels wide (x = 40..160), 41 high
    assert lesion_axes(mask, None).long == pytest.approx(121) and lesion_axes(mask, None).short == pytest.approx(41)
    in_mm = lesion_axes(mask, (0.1, 0.05))  # rows 0.1 mm apart, columns 0.05 mm apart
    assert in_mm.long == pytest.approx(121 * 0.05) and in_mm.short == pytest.approx(41 * 0.1)


def test_axes_of_a_rotated_bar_follow_its_direction():
    yy, xx = np.mgrid[:200, :200]
    bar = (np.abs((xx - 100) - (yy - 100)) <= 5) & (np.abs((xx - 100) + (yy - 100)) <= 100)
    axes = lesion_axes(bar, None)
    assert axes.long > 140 and 10 <= axes.short <= 16  # along the diagonal, about the bar's width


def test_outline_is_closed_bounded_and_in_column_row_image_coordinates():
    mask = ellipse()
    outline = lesion_outline(mask)
    assert np.array_equal(outline[0], outline[-1]) and len(outline) - 1 <= MAX_OUTLINE_POINTS
    columns, rows = outline[:, 0], outline[:, 1]
    assert columns.min() == pytest.approx(40, abs=0.6) and columns.max() == pytest.approx(161, abs=0.6)
    assert rows.min() == pytest.approx(30, abs=0.6) and rows.max() == pytest.approx(71, abs=0.6)


def test_a_ragged_border_is_simplified_to_the_point_limit():
    rng = np.random.default_rng(0)
    mask = ellipse(400, 400, 150, 150) & (rng.random((400, 400)) > 0.02)
    mask |= ellipse(400, 400, 140, 140)
    outline = lesion_outline(mask, max_points=40)
    assert len(outline) - 1 <= 40


def test_the_largest_region_is_outlined_and_a_region_at_the_edge_closes():
    mask = np.zeros((50, 80), bool)
    mask[0:30, 0:40] = True  # touches the top and left edges
    mask[40:45, 60:65] = True  # a small second region
    outline = lesion_outline(mask)
    assert outline[:, 0].max() <= 41 and outline[:, 1].max() <= 31
    assert outline[:, 0].min() == pytest.approx(0, abs=0.6) and outline[:, 1].min() == pytest.approx(0, abs=0.6)


def test_an_empty_mask_has_no_outline():
    with pytest.raises(ValueError):
        lesion_outline(np.zeros((10, 10), bool))
