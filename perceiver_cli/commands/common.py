"""Options and helpers shared by every subcommand (no model maths here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from perceiver_cli.errors import UsageError

ModelOption = typer.Option(
    None, "--model", "-m",
    help="Short name (language, vision-conv, vision-fourier, vision-learned, flow, multimodal) or hub repo id.",
)
WeightsOption = typer.Option(
    None, "--weights", "-w",
    help="A checkpoint directory (config.json + model.safetensors or pytorch_model.bin) or a DeepMind .pystate/.pickle file.",
)
DeviceOption = typer.Option("auto", "--device", help="auto, cpu, cuda or mps (auto picks an accelerator when present).")
DtypeOption = typer.Option("float32", "--dtype", help="float32 (default), bfloat16 or float16 (accelerators).")
NumericsOption = typer.Option(
    "deepmind", "--numerics",
    help="deepmind: compute DeepMind's original network (default); transformers: reproduce transformers' port exactly.",
)
JsonOption = typer.Option(False, "--json", help="Write JSON Lines to stdout instead of a table.")


def not_implemented(command: str) -> None:
    """Refuse to run a subcommand that is not built yet (never a fake result)."""
    raise UsageError(f"'{command}' is not implemented yet in this version of perceiver-cli")


def emit_json(obj: Any) -> None:
    """Write one JSON object as one line to stdout and flush (pipelines read it at once)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def check_options(model: Optional[str] = None, weights: Optional[Path] = None, batch_size: Optional[int] = None,
                  max_pixels: Optional[int] = None) -> None:
    """The usage checks that several commands share, made before any input is read."""
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if max_pixels is not None and max_pixels < 1:
        raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
    if model is not None and weights is not None:
        raise UsageError("give either --model or --weights, not both")


def refuse_repeated_outputs(paths) -> None:
    """A usage error when two -o paths name the same file or folder (written twice, or by two writers)."""
    seen: set[Path] = set()
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            raise UsageError(f"{path}: given twice as -o")
        seen.add(key)


def load_task_model(task: str, model: Optional[str], weights: Optional[Path], default: str,
                    device: str, dtype: str, numerics: str):
    """Resolve --model/--weights for one task and return the loaded model (eval mode)."""
    from perceiver_cli.load import load_model

    check_options(model, weights)
    source = Path(weights) if weights is not None else (model or default)  # a Path: --weights is never a name
    return load_model(source, device=device, dtype=dtype, numerics=numerics, task=task)


class progress_bar:
    """A transient rich progress bar on stderr, only when stderr is a terminal and there are at least
    `min_items` items (an unknown total always shows it); `with progress_bar(...) as advance: advance(n)`."""

    def __init__(self, label: str, total: Optional[int], min_items: int = 0):
        self.label, self.total, self.min_items = label, total, min_items
        self.bar = None

    def __enter__(self):
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal or (self.total is not None and self.total < self.min_items):
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, transient=True, redirect_stdout=False, redirect_stderr=True)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()
