"""MixStyle (Zhou et al., ICLR 2021): a stage-1 regulariser against camera and clinic "style".

A convolutional network's early feature statistics (each channel's mean and standard deviation over
the image) carry much of an image's style: white balance, exposure, the optics' sharpness. MixStyle
re-normalises each training image's early features with statistics mixed from another image of the
batch, so the network meets styles between those of its sources and learns to rely less on them.
It acts only while training (forward hooks on the first stages; nothing in the weights), and draws
its randomness from the CPU generator stage 1 already uses, so a seed gives the same run anywhere.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

ALPHA = 0.1  # Beta(a, a) of the mixing share, the paper's value


def beta_draws(alpha: float, generator: torch.Generator, size: int | None = None):
    """Beta(alpha, alpha) draws (one float, or ``size`` of them) seeded from the torch ``generator``,
    which has no Beta sampler of its own; shared with mixup."""
    return np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=generator))).beta(alpha, alpha, size)


def mix_styles(features: torch.Tensor, generator: torch.Generator, alpha: float = ALPHA) -> torch.Tensor:
    """``features`` (N x C x H x W) with each image's channel statistics mixed with those of another
    image of the batch, by a Beta(alpha, alpha) share per image; the content (normalised features) stays."""
    n = len(features)
    mean = features.mean(dim=(2, 3), keepdim=True).detach()
    std = (features.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
    content = (features - mean) / std
    share = torch.from_numpy(beta_draws(alpha, generator, n)).view(n, 1, 1, 1).to(features)
    partner = torch.randperm(n, generator=generator).to(features.device)
    return content * (share * std + (1 - share) * std[partner]) + (share * mean + (1 - share) * mean[partner])


@contextmanager
def style_mixing(stages: list[nn.Module], probability: float, generator: torch.Generator) -> Iterator[None]:
    """While inside, each of ``stages`` mixes its output's styles (:func:`mix_styles`) in training mode,
    for a batch with ``probability``; nothing happens when ``probability`` is 0."""
    if probability <= 0:
        yield
        return

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if module.training and len(output) > 1 and torch.rand(1, generator=generator).item() < probability:
            return mix_styles(output, generator)
        return output

    handles = [stage.register_forward_hook(hook) for stage in stages]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
