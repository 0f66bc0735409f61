"""`perceiver eval`: score a checkpoint on a dataset, with the paper's figures beside ours.

One subcommand per task family, each in its own module, imported only when it runs or shows its help.
"""

from __future__ import annotations

import typer

from perceiver_cli.commands.lazy import lazy_group
from perceiver_cli.kinds import AUTOENCODE_VIDEO, CLASSIFY, FLOW

EVAL_COMMANDS = {
    FLOW: ("perceiver_cli.commands.eval_flow", "eval_flow",
             "Optical flow on Sintel or KITTI 2015 training: EPE, Fl-all."),
    CLASSIFY: ("perceiver_cli.commands.eval_classify", "eval_classify",
                 "ImageNet classifiers on a validation folder: top-1, top-5."),
    AUTOENCODE_VIDEO: ("perceiver_cli.commands.eval_autoencode", "eval_autoencode",
                         "The multimodal autoencoder on a folder of clips: PSNR, top-1, top-5."),
}

app = typer.Typer(cls=lazy_group(EVAL_COMMANDS), no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)


@app.callback()
def evaluate() -> None:
    """Score a checkpoint on a dataset, with the paper's figures beside ours (labelled as the paper's)."""
