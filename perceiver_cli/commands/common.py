"""Options every subcommand shares, in one style, and the one way a command runs its task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import typer

from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.engine import run_local
from perceiver_cli.tasks.report import Reporter


def model_option(models: Sequence[str], default: str) -> typer.models.OptionInfo:
    """--model for a command that runs `models` (short names) or any hub repo id of their kind."""
    return typer.Option(
        None, "--model", "-m", metavar="NAME", show_default=False,
        help=f"Checkpoint: {', '.join(models)} (default {default}), or a hub repo id.",
    )


WeightsOption = typer.Option(
    None, "--weights", "-w", metavar="PATH", show_default=False,
    help="A checkpoint folder (config.json + model.safetensors or pytorch_model.bin) or a DeepMind "
         ".pystate/.pickle file.",
)
DeviceOption = typer.Option("auto", "--device", metavar="DEVICE",
                            help="auto, cpu, cuda, cuda:N or mps (auto picks an accelerator when present).")
DtypeOption = typer.Option("float32", "--dtype", metavar="DTYPE",
                           help="float32, or bfloat16 / float16 on accelerators.")
NumericsOption = typer.Option(
    "deepmind", "--numerics", metavar="NAME",
    help="deepmind: compute DeepMind's original network; transformers: reproduce transformers' port exactly.",
)
JsonOption = typer.Option(False, "--json", help="Write one JSON object per line to stdout instead of a table.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars or notes on stderr (errors still print).")


def examples(*lines: str) -> str:
    """The examples that end a command's help (its epilog), printed as written, one per line."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def check_source(model: Optional[str], weights: Optional[Path], default: str) -> str | Path:
    """The checkpoint to load: --weights (always a path), else --model (a name first), else the default."""
    if model is not None and weights is not None:
        raise UsageError("give either --model or --weights, not both")
    return Path(weights) if weights is not None else (model or default)


def run_task(task, *, device: str = "auto", dtype: str = "float32", batch_size: Optional[int] = None,
             json_lines: bool = False, quiet: bool = False) -> int:
    """Decide the runtime once, then run `task` on the local engine, reporting as the options say."""
    from perceiver_cli.runtime import resolve_runtime

    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    runtime = resolve_runtime(device, dtype, batch_size, task.cpu_batch_size, task.accelerator_batch_size)
    return run_local(task, runtime, Reporter(task, json_lines=json_lines, quiet=quiet))

