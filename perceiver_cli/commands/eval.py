"""`perceiver eval`: score a checkpoint on a dataset, with the paper's figures beside ours.

One subcommand per task family, each in its own module; this file only registers them.
"""

from __future__ import annotations

import typer

from perceiver_cli.commands.eval_flow import eval_flow

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.callback()
def evaluate() -> None:
    """Score a checkpoint on a dataset, with the paper's figures beside ours (labelled as the paper's)."""


app.command("flow", epilog=eval_flow.epilog,
            short_help="Optical flow on Sintel or KITTI 2015 training: EPE, Fl-all.")(eval_flow)
