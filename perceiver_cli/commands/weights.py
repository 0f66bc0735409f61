"""`perceiver weights` (not built yet)."""

from __future__ import annotations

import typer

from perceiver_cli.commands.common import not_implemented

app = typer.Typer(help="List, download, verify and import checkpoints.", no_args_is_help=True)


@app.command("list")
def list_() -> int:
    """Not implemented yet."""
    not_implemented("weights list")
    return 2
