"""The fusion classifier: 8 diagnoses from image, lesion mask, metadata and radiomics.

Modules: predict (:class:`FusionClassifier`, what the node runs), net, data (inputs and the tensor
cache), train (the training stages), fit (`dermnode train classifier`: from a data folder to a
weights directory), evaluate, radiomics_cache (radiomic features of a data folder, cached), commands
(`dermnode train|evaluate classifier`).

The names below are re-exported here and load on first use (:mod:`dermnode.models.lazy`),
so that importing ``commands`` for ``dermnode --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermnode.models.lazy import lazy_exports

if TYPE_CHECKING:
    from dermnode.models.classifier.predict import NAME, FusionClassifier, is_malignant, radiomics_vector

__all__ = ["NAME", "FusionClassifier", "is_malignant", "radiomics_vector"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "predict" for name in __all__})
