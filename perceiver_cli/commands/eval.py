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

from perceiver_cli.commands.eval_classify import eval_classify  # noqa: E402
from perceiver_cli.commands.eval_autoencode import eval_autoencode  # noqa: E402

app.command("classify", epilog=eval_classify.epilog,
            short_help="ImageNet classifiers on a validation folder: top-1, top-5.")(eval_classify)
app.command("autoencode-video", epilog=eval_autoencode.epilog,
            short_help="The multimodal autoencoder on a folder of clips: PSNR, top-1, top-5.")(eval_autoencode)
