"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py.

``train_app`` and ``evaluate_app`` are the ``dermnode train`` and ``dermnode evaluate`` sub-apps;
each model adds its own commands to them from its ``commands`` module (segmentation, classifier,
bcc_sk, input_gate). Heavy libraries are imported inside the command functions so that
``dermnode --help`` stays fast.
"""

from __future__ import annotations

import typer

from dermnode.models.bcc_sk import commands as bcc_sk_commands
from dermnode.models.classifier import commands as classifier_commands
from dermnode.models.input_gate import commands as input_gate_commands
from dermnode.models.segmentation import commands as segmentation_commands

train_app = typer.Typer(help="Train a model on a data folder laid out like ../shared/data.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate a model on a data folder; writes metrics.json and plots.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
    for commands in (segmentation_commands, classifier_commands, bcc_sk_commands, input_gate_commands):
        commands.register(train_app, evaluate_app)
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
