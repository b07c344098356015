"""The `dermnode` command: one Typer app that mounts each room's commands.

Each room keeps its commands in its own ``cli.py`` and imports heavy libraries (torch, highdicom)
inside the command functions, so that ``dermnode --help`` stays fast.

User mistakes end every command the same way (``DermnodeGroup``): a UserError raised anywhere, or a
command-line usage error, is printed as one line ``dermnode: error: ...`` on stderr, exit status 2.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from dermnode.dicom_templates import cli as templates_cli
from dermnode.errors import UserError
from dermnode.models import cli as models_cli
from dermnode.node import cli as node_cli
from dermnode.validation import cli as validation_cli
from dermnode.web import cli as web_cli
from dermnode.workers import cli as workers_cli

USER_ERROR_EXIT = 2
#: click's exceptions as Typer raises them (recent Typer versions carry their own copy of click).
_click_errors = import_module(typer.BadParameter.__module__)


class DermnodeGroup(TyperGroup):
    """The top-level group: turns a UserError or a usage error of any subcommand into one line."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as error:
            fail(str(error))
        except _click_errors.NoArgsIsHelpError:
            raise  # `dermnode audit` alone: show that group's help, as click does
        except _click_errors.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            fail(f"{error.format_message()}{hint}", error.exit_code)


def fail(message: str, code: int = USER_ERROR_EXIT) -> None:
    """Print ``dermnode: error: <message>`` as one line on stderr and exit with ``code``."""
    typer.echo(f"dermnode: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _version(show: bool) -> None:
    if show:
        try:
            typer.echo(f"dermnode {version('dermnode')}")
        except PackageNotFoundError:
            typer.echo("dermnode (version unknown: the package is not installed)")
        raise typer.Exit()


app = typer.Typer(help="dermnode: a DICOM node for dermoscopy AI.", no_args_is_help=True, cls=DermnodeGroup)


@app.callback()
def main(
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """dermnode: a DICOM node for dermoscopy AI."""


for room in (node_cli, workers_cli, models_cli, templates_cli, validation_cli, web_cli):
    room.register(app)

if __name__ == "__main__":
    app()
