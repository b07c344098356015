"""Calibration on the validation split: temperature scaling of the fused head, and a rank-keeping
scaling of the malignant probability for the image-only head.

Temperature scaling divides logits before the softmax; for the image-only head the fitted temperature
(0.56-0.74) sharpened the probabilities, and the summed malignant probability of the sharpened
softmax ranked a new source's images worse than the plain softmax did (isic-8class left out: 0.779
against 0.797 without metadata, the model card's ``inference_choices``). The malignancy scaling keeps
the plain softmax's ranking: P(malignant) = P(MEL)+P(BCC)+P(AK)+P(SCC) goes through an increasing map
(Platt scaling of its logit), and each class keeps its share within the malignant or the benign
group, so no two cases change order on malignancy.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from dermnode.contract import CLASS_CODES, MALIGNANT_CODES

MALIGNANT_COLUMNS = torch.tensor([code in MALIGNANT_CODES for code in CLASS_CODES])
#: (slope, offset) that leaves the probabilities as they are
NO_SCALING = (1.0, 0.0)
_EPS = 1e-6
_SLOPE_BOUNDS = (0.05, 20.0)  # a positive slope: the map stays increasing


def _minimise(parameters: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``parameters`` (a leaf tensor) after L-BFGS on ``loss``; the line search keeps the step finite where
    the loss is flat."""
    optimizer = torch.optim.LBFGS([parameters], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(parameters)
        value.backward()
        return value

    optimizer.step(closure)
    return parameters.detach()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T in [0.05, 20] that minimises the validation NLL of logits / T
    (finite also where the NLL is flat: weak, near-zero logits)."""
    log_t = _minimise(torch.zeros(1, requires_grad=True), lambda log_t: F.cross_entropy(logits / log_t.exp(), labels))
    temperature = float(log_t.exp())
    return min(max(temperature, 0.05), 20.0) if math.isfinite(temperature) else 1.0


def malignant_logit(probabilities: torch.Tensor) -> torch.Tensor:
    """logit of P(malignant), the sum of the malignant classes' probabilities (cases x classes)."""
    malignant = probabilities[:, MALIGNANT_COLUMNS.to(probabilities.device)].sum(1)
    return torch.logit(malignant.clamp(_EPS, 1 - _EPS))


def fit_malignancy_scaling(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Platt scaling of P(malignant): the (slope, offset) minimising the validation NLL of
    sigmoid(slope * logit(P(malignant)) + offset); the slope is kept in [0.05, 20]. NO_SCALING when
    the validation cases are all of one kind (nothing to fit)."""
    x = malignant_logit(probabilities.detach().float())
    y = MALIGNANT_COLUMNS[labels].float()
    if y.min() == y.max():
        return NO_SCALING
    params = _minimise(torch.tensor([1.0, 0.0], requires_grad=True),
                       lambda p: F.binary_cross_entropy_with_logits(p[0] * x + p[1], y))
    slope, offset = (float(v) for v in params)
    if not (math.isfinite(slope) and math.isfinite(offset)):
        return NO_SCALING
    return min(max(slope, _SLOPE_BOUNDS[0]), _SLOPE_BOUNDS[1]), offset


def scale_malignancy(probabilities: torch.Tensor, scaling: tuple[float, float]) -> torch.Tensor:
    """``probabilities`` (cases x classes) with P(malignant) mapped to sigmoid(slope * logit + offset); each
    malignant class keeps its share of the malignant mass, each benign class its share of the benign."""
    slope, offset = scaling
    if (slope, offset) == NO_SCALING:
        return probabilities
    columns = MALIGNANT_COLUMNS.to(probabilities.device)
    before = probabilities[:, columns].sum(1, keepdim=True).clamp(_EPS, 1 - _EPS)
    after = torch.sigmoid(slope * torch.logit(before) + offset)
    scaled = torch.where(columns, probabilities * (after / before), probabilities * ((1 - after) / (1 - before)))
    return scaled / scaled.sum(1, keepdim=True)
