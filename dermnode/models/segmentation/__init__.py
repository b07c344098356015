"""The lesion segmenter: U-Net (``cpu``) or Mask R-CNN (``paper``), one lesion mask per image.

Modules: predict (:class:`LesionSegmenter`, what the node runs), net (the networks of both profiles), train,
evaluate (Dice, Jaccard, overlay sheet), commands (`dermnode train|evaluate segmentation`).

The names below are re-exported here and load on first use (:mod:`dermnode.models.lazy`),
so that importing ``commands`` for ``dermnode --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermnode.models.lazy import lazy_exports

if TYPE_CHECKING:
    from dermnode.models.segmentation.predict import (
        STARTER,
        LesionSegmenter,
        SegmentationResult,
        best_component,
    )

__all__ = ["STARTER", "LesionSegmenter", "SegmentationResult", "best_component"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "predict" for name in __all__})
