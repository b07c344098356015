"""The `dermnode` command: one Typer app that mounts each room's commands.

Each room keeps its commands in its own ``cli.py`` and imports heavy libraries (torch, highdicom)
inside the command functions, so that ``dermnode --help`` stays fast.
"""

from __future__ import annotations

import typer

from dermnode.dicom_templates import cli as templates_cli
from dermnode.models import cli as models_cli
from dermnode.node import cli as node_cli
from dermnode.validation import cli as validation_cli
from dermnode.web import cli as web_cli
from dermnode.workers import cli as workers_cli

app = typer.Typer(help="dermnode: a DICOM node for dermoscopy AI.", no_args_is_help=True)

for room in (node_cli, workers_cli, models_cli, templates_cli, validation_cli, web_cli):
    room.register(app)

if __name__ == "__main__":
    app()
