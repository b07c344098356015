"""`dermnode web hash-password` and `dermnode web make-token`: credentials for the settings."""

from __future__ import annotations

from typing import Annotated

import typer


def _role(role: str) -> str:
    from dermnode.node.settings import WEB_ROLES

    if role not in WEB_ROLES:
        raise typer.BadParameter(f"{role!r}: use {' or '.join(WEB_ROLES)}")
    return role


def hash_password(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="read-only or operator", callback=_role)] = "read-only",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help="asked for when not given (or read from stdin)")] = "",
) -> None:
    """Print a web_users entry (name:role:scrypt hash) for the settings; the password itself is not kept."""
    from dermnode.web.auth import hash_password as make_hash

    if len(password) < 8:
        typer.echo("error: a password needs at least 8 characters", err=True)
        raise typer.Exit(2)
    typer.echo(f"{name}:{role}:{make_hash(password)}")


def make_token(
    name: Annotated[str, typer.Argument(help="who uses the token (a script, a monitoring system)")],
    role: Annotated[str, typer.Option(help="read-only or operator", callback=_role)] = "read-only",
) -> None:
    """Print a new API token (shown once) and the web_tokens entry that accepts it."""
    from dermnode.web.auth import new_token

    token, stored = new_token()
    typer.echo(f"token (give it to {name}; it is not stored): {token}")
    typer.echo(f"web_tokens entry: {name}:{role}:{stored}")


def register(app: typer.Typer) -> None:
    web_app = typer.Typer(help="The web page and API: credentials.", no_args_is_help=True)
    web_app.command("hash-password")(hash_password)
    web_app.command("make-token")(make_token)
    app.add_typer(web_app, name="web")
