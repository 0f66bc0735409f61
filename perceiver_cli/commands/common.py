"""Options every subcommand shares, in one style, and the one way a command runs its task."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer

from perceiver_cli.bounds import OPTION_LIMITS
from perceiver_cli.choices import DEVICES, DTYPE_NAMES
from perceiver_cli.commands.completion import choices, numerics
from perceiver_cli.errors import UsageError
from perceiver_cli.io.location import is_remote
from perceiver_cli.tasks.engine import RuntimeRequest, ScaleOptions, run_engine
from perceiver_cli.tasks.report import DEFAULT_PROGRESS_INTERVAL, Reporter
from perceiver_cli.tasks.report_html import REPORT_WORST_DEFAULT


def model_option(models: Sequence[str], default: str) -> typer.models.OptionInfo:
    """--model for a command that runs `models` (short names) or any hub repo id of their kind."""
    return typer.Option(
        None, "--model", "-m", metavar="NAME", show_default=False, autocompletion=choices(models),
        help=f"Checkpoint: {', '.join(models)} (default {default}), or a hub repo id.",
    )


WeightsOption = typer.Option(
    None, "--weights", "-w", metavar="PATH", show_default=False,
    help="A checkpoint folder (config.json + model.safetensors or pytorch_model.bin), or its URL "
         "(s3://..., read once into the cache), or a DeepMind .pystate/.pickle file.",
)
DeviceOption = typer.Option("auto", "--device", metavar="DEVICE", autocompletion=choices(DEVICES),
                            help="auto, cpu, cuda, cuda:N or mps (auto picks an accelerator when present).")
DtypeOption = typer.Option("float32", "--dtype", metavar="DTYPE", autocompletion=choices(DTYPE_NAMES),
                           help="float32; bfloat16 (CPUs with bf16 units, accelerators); float16 (accelerators); "
                                "auto: bfloat16 where the hardware multiplies it natively (not flow on a CPU), "
                                "else float32.")
NumericsOption = typer.Option(
    "deepmind", "--numerics", metavar="NAME", autocompletion=choices(numerics),
    help="deepmind: compute DeepMind's original network; transformers: reproduce transformers' port exactly.",
)


def batch_size_option(task: Any, what: str, note: str = "") -> typer.models.OptionInfo:
    """--batch-size/-b: `what` per forward pass, the task's own defaults on a GPU and on the CPU named."""
    return typer.Option(
        None, "--batch-size", "-b", metavar="N", show_default=False,
        help=f"{what} per forward pass (default {task.accelerator_batch_size} on a GPU, "
             f"{task.cpu_batch_size} on the CPU{note}).")


def limit_option(what: str) -> typer.models.OptionInfo:
    """--limit N of an evaluation: score only `what` (N of them)."""
    return typer.Option(None, "--limit", metavar="N", show_default=False,
                        help=f"Score only {what} (a quick look).")


ReportOption = typer.Option(
    None, "--report", metavar="FILE.html", show_default=False,
    help="Also write a self-contained HTML page to look at: the figures beside the paper's, the dataset's "
         "breakdown, and the worst items with pictures (marked partial when the run is interrupted).")
ReportWorstOption = typer.Option(REPORT_WORST_DEFAULT, "--report-worst", metavar="N",
                                 help="How many of the worst items the --report page shows with pictures (0 to "
                                      f"{OPTION_LIMITS['--report-worst']}).")
JsonOption = typer.Option(False, "--json", help="Write one JSON object per line to stdout instead of a table.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars or notes on stderr (errors still print).")


# The options of dataset-scale runs, shared by every command over many inputs (see `scale_options`).
_SCALE_OPTIONS: list[tuple[str, Any, Any]] = [
    ("manifest", Optional[str], typer.Option(
        None, "--manifest", metavar="FILE", show_default=False,
        help="Append one JSON line per finished item to FILE (input, status, outputs, error, seconds, worker); "
             "run again with the same FILE to resume: items it records as done are skipped. A URL "
             "(s3://bucket/run/manifest/) keeps the records as parts under that prefix.")),
    ("retry_failed", bool, typer.Option(
        False, "--retry-failed", help="With --manifest: run the items it records as failed again.")),
    ("skip_existing", bool, typer.Option(
        False, "--skip-existing",
        help="Skip items whose output files all exist (commands writing files with -o); classify and "
             "fill-mask write no files and resume by --manifest only.")),
    ("shard", Optional[str], typer.Option(
        None, "--shard", metavar="I/N", show_default=False,
        help="Run only shard I of N (from 0; items split by a hash of their input), or auto: from "
             "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, else RANK/WORLD_SIZE.")),
    ("engine", str, typer.Option(
        "local", "--engine", metavar="NAME",
        help="local (this process) or ray (model workers on a Ray cluster; needs pip install "
             "'perceiver-cli[ray]').")),
    ("ray_address", Optional[str], typer.Option(
        None, "--ray-address", metavar="ADDRESS", show_default=False,
        help="With --engine ray: the cluster to join (auto: the one started on this machine with ray start); "
             "default: a local cluster for this run.")),
    ("workers", Optional[int], typer.Option(
        None, "--workers", metavar="N", show_default=False,
        help="With --engine ray: model workers, each loading the model once (default: one per GPU with "
             "--gpus-per-worker, else 1).")),
    ("gpus_per_worker", float, typer.Option(
        0.0, "--gpus-per-worker", metavar="G", help="With --engine ray: GPUs each worker holds (fractions share "
                                                     "a GPU).")),
    ("cpus_per_worker", Optional[float], typer.Option(
        None, "--cpus-per-worker", metavar="C", show_default=False,
        help="With --engine ray: CPUs each worker holds (default: 1 with GPUs, else a node's CPUs shared "
             "by the workers).")),
    ("progress_interval", float, typer.Option(
        DEFAULT_PROGRESS_INTERVAL, "--progress-interval", metavar="SECONDS", envvar="PERCEIVER_PROGRESS_INTERVAL",
        help="When stderr is not a terminal (a log file, a Slurm job): a plain progress line (done/total items, "
             "items/s, elapsed, ETA) at most this often, and one at the end; -q silences it.")),
]


def options_in_place_of(command: Callable[..., Any], name: str, options: Sequence[tuple[str, Any, Any]],
                        build: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """`command` with its parameter `name` replaced by the keyword `options` ((name, type, typer Option) each),
    after its own; the wrapped command receives `name=build(values)`, values by option name (those given)."""
    signature = inspect.signature(command)
    own = [p for key, p in signature.parameters.items() if key != name]
    added = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for key, kind, option in options]

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> Any:
        values = {key: kwargs.pop(key) for key, _, _ in options if key in kwargs}
        return command(*args, **{name: build(values)}, **kwargs)

    with_options.__signature__ = signature.replace(parameters=own + added)
    with_options.__annotations__ = {**{k: v for k, v in command.__annotations__.items() if k != name},
                                    **{key: kind for key, kind, _ in options}}
    return with_options


def scale_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the options of dataset-scale runs (--manifest, --retry-failed, --skip-existing, --shard,
    --engine, --ray-address, --workers, --gpus-per-worker, --cpus-per-worker, --progress-interval), after its
    own; the command receives them as one `scale: ScaleOptions` argument and hands it to `run_task`."""
    return options_in_place_of(command, "scale", _SCALE_OPTIONS, lambda values: ScaleOptions(**values))


def examples(*lines: str) -> str:
    """The examples that end a command's help (its epilog), printed as written, one per line."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def check_source(model: Optional[str], weights: Optional[str | Path], default: str) -> str | Path:
    """The checkpoint to load: --weights (a path, or a URL of a checkpoint folder), else --model (a name
    first), else the default."""
    if model is not None and weights is not None:
        raise UsageError("give either --model or --weights, not both")
    if weights is not None:
        return str(weights) if is_remote(weights) else Path(weights)
    return model or default


def run_task(task, *, device: str = "auto", dtype: str = "float32", batch_size: Optional[int] = None,
             json_lines: bool = False, quiet: bool = False, scale: Optional[ScaleOptions] = None,
             listeners: Sequence[Callable] = ()) -> int:
    """Run `task` on the engine `scale` names (the local one by default), reporting as the options say.

    The runtime (device, dtype, threads, batch size) is decided once where the model runs, and only when an
    item is left to run."""
    return run_engine(task, RuntimeRequest(device, dtype, batch_size),
                      Reporter(task, json_lines=json_lines, quiet=quiet), scale, listeners)

