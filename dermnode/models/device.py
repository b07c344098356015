"""Where the models run: the device asked for, else CUDA when present, else the CPU."""

from __future__ import annotations

import torch


def torch_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
