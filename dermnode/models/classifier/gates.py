"""A network's feature gate (the input gate's second part, :class:`FeatureGate`), fitted on the
features of its plain training and validation images: the pooled features and the early stages'
style statistics (:meth:`ImageBranch.with_style`)."""

from __future__ import annotations

from dermnode.models.classifier.data import ClassifierCache
from dermnode.models.classifier.net import FusionNet
from dermnode.models.classifier.train import image_features
from dermnode.models.input_gate.checks import GATE_MARGIN, GATE_QUANTILE, FeatureGate


def fit_feature_gate(net: FusionNet, train: ClassifierCache, val: ClassifierCache) -> FeatureGate:
    """The gate's statistics from the (plain, unaugmented) training and validation images."""
    train_features, val_features = (image_features(net, c, with_style=True)[0].numpy() for c in (train, val))
    return FeatureGate.fit(train_features, val_features, with_style=True)


def gate_note(gate: FeatureGate) -> str:
    """The model card's words for a network's gate."""
    features = (f"{len(gate.mean)} features (pooled, and the first two stages' channel means and spreads)"
                if gate.with_style else f"{len(gate.mean)} features")
    return (f"Mahalanobis distance of the image branch's {features} to the training images' "
            f"(Ledoit-Wolf covariance); refused above {gate.threshold:.2f}, {GATE_MARGIN} x the {GATE_QUANTILE:.1%} "
            "quantile of the validation images' distances")
