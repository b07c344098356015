"""The BCC-versus-seborrheic-keratosis model: CLIP with CoOp prompts and a linear probe.

Modules: predict (:class:`BccSkModel`, what the node runs), net, train, evaluate, commands
(`dermnode train|evaluate bcc-sk`). Its inputs are prepared by :mod:`dermnode.models.classifier.data`.

The names below are re-exported here and load on first use (:mod:`dermnode.models.lazy`),
so that importing ``commands`` for ``dermnode --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermnode.models.lazy import lazy_exports

if TYPE_CHECKING:
    from dermnode.models.bcc_sk.predict import NAME, NEGATIVE, POSITIVE, BccSkModel

__all__ = ["NAME", "POSITIVE", "NEGATIVE", "BccSkModel"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "predict" for name in __all__})
