"""`perceiver fill-mask` (not built yet)."""

from __future__ import annotations

from typing import List

import typer

from perceiver_cli.commands.common import not_implemented


def fill_mask(inputs: List[str] = typer.Argument(None, help="Inputs.")) -> int:
    """Not implemented yet."""
    not_implemented("fill-mask")
    return 2
