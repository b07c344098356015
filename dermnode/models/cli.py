"""Commands of this room, mounted on the `dermnode` app by dermnode/cli.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this room's commands (and sub-apps) to the main app."""
