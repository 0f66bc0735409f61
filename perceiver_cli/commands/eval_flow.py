"""`perceiver eval flow`: the flow checkpoint on a Sintel or KITTI 2015 training split, beside the paper."""

from __future__ import annotations

from typing import Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           ReportOption, ReportWorstOption, WeightsOption, batch_size_option,
                                           check_source, examples, limit_option, model_option)
from perceiver_cli.kinds import FLOW
from perceiver_cli.tasks.flow import MODELS, FlowTask
from perceiver_cli.tasks.engine import RuntimeRequest
from perceiver_cli.tasks.eval_flow import SPEED_BANDS, EvalFlowTask
from perceiver_cli.tasks.evaluation import evaluate_with_report
from perceiver_cli.commands.packed import packed_options


@packed_options
def eval_flow(
    dataset: str = typer.Argument(
        ..., metavar="DATASET", show_default=False,
        help="A Sintel or KITTI 2015 dataset: its root or its training folder (the layout is recognised)."),
    model: Optional[str] = model_option(MODELS, FlowTask.default_model),
    weights: Optional[str] = WeightsOption,
    sintel_pass: str = typer.Option("clean", "--pass", metavar="NAME", help="Sintel pass: clean or final."),
    limit: Optional[int] = limit_option("the first N pairs"),
    batch_size: Optional[int] = batch_size_option(FlowTask, "Model windows"),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    report: Optional[str] = ReportOption,
    report_worst: int = ReportWorstOption,
    packed: Optional[tuple] = None,
) -> int:
    """End-point error of optical flow on a dataset's training pairs, beside the paper's.

    Sintel: EPE over all valid pixels, per scene, and matched / unmatched (non-occluded / occluded pixels).
    KITTI 2015: EPE, Fl-all (share of valid pixels whose error exceeds 3 px and 5% of the motion), and EPE on
    the non-occluded pixels (flow_noc).
    Prints a table at the end, or with --json one line per pair {"input", "input2", "scene", "epe",
    "epe_matched"?, "epe_unmatched"?, "epe_s0_10"?, "epe_s10_40"?, "epe_s40plus"? (Sintel's speed bands),
    "fl_all"?, "valid_pixels"?, "epe_noc"?} (the EPE `perceiver flow --gt` reports) and a last line {"dataset",
    "pass", "pairs", "unscored", "failed", "available", "skipped", "epe", ..., "paper": {"epe", "source"}}:
    "pairs" were scored, "unscored" ran but their ground truth was unusable; a pair without a ground-truth file
    is not run ("skipped", one warning for all), and --limit counts the pairs that have one. --report FILE.html also
    writes a page to look at: the figures, per scene, and the worst pairs with their flow and error maps.
    The paper's figures come from Perceiver IO, Table 3 (trained on AutoFlow).
    """
    source = check_source(model, weights, FlowTask.default_model)
    task = EvalFlowTask(dataset, source=source, sintel_pass=sintel_pass, limit=limit, numerics=numerics,
                        quiet=quiet)
    return evaluate_with_report(task, RuntimeRequest(device, dtype, batch_size), FLOW, report,
                                report_worst, dataset, packed=packed, more_doubles=tuple(SPEED_BANDS),
                                json_lines=json_lines, quiet=quiet)


eval_flow.epilog = examples("perceiver eval flow MPI-Sintel-complete/ --pass final",
                            "perceiver eval flow data_scene_flow/training --limit 20",
                            "perceiver eval flow sintel/ --json > sintel-clean.jsonl",
                            "perceiver eval flow sintel/ --report sintel.html --report-worst 20")
