"""`perceiver eval classify DATASET`: top-1 and top-5 of an ImageNet classifier over a labelled image folder,
computed from the classify task's own predictions, beside the paper's top-1."""

from __future__ import annotations

from typing import Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           ReportOption, ReportWorstOption, WeightsOption, batch_size_option,
                                           check_source, examples, limit_option, model_option)
from perceiver_cli.kinds import CLASSIFY
from perceiver_cli.commands.packed import packed_options
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.classify import MODELS, ClassifyTask
from perceiver_cli.tasks.engine import RuntimeRequest
from perceiver_cli.tasks.eval_classify import EvalClassifyTask
from perceiver_cli.tasks.evaluation import evaluate_with_report


@packed_options
def eval_classify(
    dataset: Optional[str] = typer.Argument(None, metavar="DATASET", show_default=False,
                                   help="An ImageNet validation folder: one folder of images per WordNet id, or "
                                        "a flat folder of images with --labels."),
    labels: Optional[str] = typer.Option(
        None, "--labels", metavar="FILE", show_default=False,
        help="For a flat folder: lines 'FILENAME LABEL_INDEX' (class index 0-999, file names relative to DATASET)."),
    model: Optional[str] = model_option(MODELS, ClassifyTask.default_model),
    weights: Optional[str] = WeightsOption,
    limit: Optional[int] = limit_option(
        "N images, taken one class at a time in turn"),
    batch_size: Optional[int] = batch_size_option(ClassifyTask, "Images"),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    report: Optional[str] = ReportOption,
    report_worst: int = ReportWorstOption,
    packed: Optional[tuple] = None,
) -> int:
    """Top-1 and top-5 accuracy (%) of an ImageNet classifier on a labelled folder, beside the paper's top-1.

    Every image goes through classify's own code; an image that cannot be read is reported, left out of the
    scores and makes the exit code 1. Prints a table at the end, or with --json one line per image, classify's
    record with its true class added, {"input", "predictions", "truth": {"label", "index"}} (or {"input",
    "error"}), and a last line {"dataset", "model", "items", "failed", "top1", "top5", "correct": {"1", "5"},
    "paper": {"top1", "source", "setting"}}. --report FILE.html also writes a page to look at: per class (worst
    first), the top confusions, and the worst images with our top-5.
    """
    if dataset is None:
        raise UsageError("give the DATASET to evaluate on (an image folder)")
    source = check_source(model, weights, ClassifyTask.default_model)
    task = EvalClassifyTask(dataset, labels=labels, source=source, limit=limit, numerics=numerics)
    return evaluate_with_report(task, RuntimeRequest(device, dtype, batch_size), CLASSIFY, report,
                                report_worst, dataset, packed=packed, json_lines=json_lines, quiet=quiet)


eval_classify.epilog = examples("perceiver eval classify imagenet/val -m vision-conv",
                                "perceiver eval classify val_flat/ --labels val_labels.txt --limit 1000",
                                "perceiver eval classify imagenet/val --json | tail -1",
                                "perceiver eval classify imagenet/val --limit 500 --report classify.html")
