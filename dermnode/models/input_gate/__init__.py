"""The input gate: images that are not analysable dermoscopy get a reason, never a diagnosis.

Modules: checks (:func:`image_problem` on the pixels, :class:`FeatureGate` on the classifier's
image features), evaluate (refusal rates by reason), commands (`dermnode evaluate gate`).

The names below are re-exported here and load on first use (:mod:`dermnode.models.lazy`),
so that importing ``commands`` for ``dermnode --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermnode.models.lazy import lazy_exports

if TYPE_CHECKING:
    from dermnode.models.input_gate.checks import NOT_ANALYSABLE, FeatureGate, GateLimits, image_problem

__all__ = ["NOT_ANALYSABLE", "GateLimits", "FeatureGate", "image_problem"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "checks" for name in __all__})
