"""Training checkpoints: what a run needs to resume where it stopped (``--resume``).

A checkpoint holds the model, optimiser, learning-rate scheduler and random generator states plus
the number of finished epochs; it is written to a temporary file and renamed, so a run killed while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(
    path: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scheduler: Any | None = None,
    **extra: Any,
) -> None:
    """Write the state after ``epoch`` finished epochs; ``extra`` holds anything else to resume."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": epoch,
        **extra,
    }
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scheduler: Any | None = None,
    map_location: str | torch.device | None = None,
) -> tuple[int, dict]:
    """Restore the states saved by :func:`save_checkpoint`; returns (finished epochs, the extras).

    With no checkpoint at ``path`` nothing is restored and (0, {}) comes back.
    """
    path = Path(path)
    if not path.is_file():
        return 0, {}
    state = torch.load(path, weights_only=False, map_location=map_location)
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    generator.set_state(state.pop("generator"))
    if scheduler is not None:
        scheduler.load_state_dict(state.pop("scheduler"))
    state.pop("scheduler", None)
    return state.pop("epoch"), state
