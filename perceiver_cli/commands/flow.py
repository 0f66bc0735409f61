"""`perceiver flow`: optical flow between consecutive frames of image sequences and videos."""

from __future__ import annotations

from typing import List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           ReportOption, ReportWorstOption, ScaleOptions, WeightsOption,
                                           batch_size_option, check_source, examples, model_option, run_task,
                                           scale_options)
from perceiver_cli.commands.completion import choices, comma_list, flow_styles, legend_corners
from perceiver_cli.commands.packed import (ItemsPerFileOption, PrecisionOption, check_precision, packed_folder,
                                           split_packed)
from perceiver_cli.errors import UsageError
from perceiver_cli.io.writers import FLOW_FORMATS, MASK_SUFFIXES
from perceiver_cli.tasks.packed_outputs import FLOW_ENCODERS, array_dtypes, packed_outputs
from perceiver_cli.tasks.flow import DIRECTIONS, MODELS, FlowTask

LegendOption = typer.Option(
    None, "--legend", metavar="CORNER", show_default=False, autocompletion=choices(legend_corners),
    help="Draw the colour-wheel legend in this corner of every picture: top-left, top-right, bottom-left or "
         "bottom-right.")
StyleOption = typer.Option("middlebury", "--style", metavar="NAME", autocompletion=choices(flow_styles),
                           help="Colour coding: middlebury (Baker et al.) or deepmind (DeepMind's colab).")
MaxFlowOption = typer.Option(
    None, "--max-flow", metavar="PX", show_default=False,
    help="Colour scale: this much motion is fully saturated (default: each picture's largest motion; a "
         "video's running largest; 24 for --style deepmind).")


@scale_options
def flow(
    inputs: List[str] = typer.Argument(
        None, metavar="INPUT", show_default=False,
        help="Two images (one pair, the same one twice for zero motion); more images, a glob, or a folder (one "
             "sequence: its frames in natural order, subfolders ignored unless --recursive); one video; or - for "
             "paths on stdin. Pairs are never made across folders."),
    outputs: List[str] = typer.Option(
        None, "--output", "-o", metavar="PATH", show_default=False,
        help="Repeatable: a .flo, .npy or picture file (one pair); for a video input a video file (.mp4, .mkv, "
             ".avi, .gif, ...: one colour frame per pair) or a .npy of every pair (pairs, H, W, 2); or a folder "
             "(one file per pair and --format, named after the pair's first frame)."),
    model: Optional[str] = model_option(MODELS, FlowTask.default_model),
    weights: Optional[str] = WeightsOption,
    formats: Optional[str] = typer.Option(
        None, "--format", "-f", metavar="LIST", show_default=False, autocompletion=comma_list(FLOW_FORMATS),
        help="What goes into folder outputs, comma-separated (default flo): flo, npy, kitti (16-bit KITTI PNG), "
             "or a picture: png, jpg, webp, bmp; with --gt also epe (<stem>_epe.png, the end-point-error "
             "map with a scale bar); or parquet / wds: every pair's record and flow packed into the -o folder "
             "(part-00000.parquet, ...; see --items-per-file, --precision)."),
    recursive: bool = typer.Option(False, "--recursive", "-r",
                                   help="Read every folder below a folder argument that holds frames, each as its "
                                        "own sequence (folders of masks or KITTI flow are skipped)."),
    step: int = typer.Option(1, "--step", metavar="K", help="Pair each frame t with frame t + K."),
    start: Optional[float] = typer.Option(None, "--start", metavar="SECONDS", show_default=False,
                                          help="Video input: begin at this time."),
    end: Optional[float] = typer.Option(None, "--end", metavar="SECONDS", show_default=False,
                                        help="Video input: stop before this time."),
    direction: str = typer.Option(
        "forward", "--direction", metavar="WHICH", autocompletion=choices(DIRECTIONS),
        help="forward, backward (second frame to first), or both: also <stem>_backward files and an occlusion "
             "mask <stem>_occlusion (forward-backward consistency, Sundaram et al. 2010), and \"occluded\"."),
    occlusion_formats: Optional[str] = typer.Option(
        None, "--occlusion-format", metavar="LIST", show_default=False, autocompletion=comma_list(MASK_SUFFIXES),
        help="With --direction both: the occlusion mask as png (255 = occluded), npy (bool), or both "
             "(default png)."),
    gt: Optional[str] = typer.Option(
        None, "--gt", metavar="PATH", show_default=False,
        help="Ground truth (.flo, 16-bit KITTI .png, .pfm or .npy): a file (one pair) or a folder of <first frame "
             "stem> files (a subfolder per sequence with --recursive; masks in its invalid/ are respected). Adds "
             "\"epe\" (a --gt that is not there is refused); a pair without usable ground truth (not in the "
             "folder, corrupt, mis-sized) gets null and a warning, and its flow is kept."),
    max_epe: Optional[float] = typer.Option(
        None, "--max-epe", metavar="PX", show_default=False,
        help="Scale of the epe error maps: this error is the top colour (default: each map's largest error)."),
    max_flow: Optional[float] = MaxFlowOption,
    style: str = StyleOption,
    legend: Optional[str] = LegendOption,
    resize: bool = typer.Option(False, "--resize",
                                help="Resize a second frame of another size to the first frame's size."),
    downscale: float = typer.Option(
        1.0, "--downscale", metavar="F",
        help="Run the model on frames resized by 1/F (about F^2 fewer windows, faster) and return the flow at the "
             "input's size, vectors scaled back; coarser flow (see docs/performance.md)."),
    batch_size: Optional[int] = batch_size_option(
        FlowTask, "Model windows", ", where a window costs about 1 GB and batching gains nothing"),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", metavar="N", show_default=False,
        help="Refuse images with more pixels than this (decompression bombs; default 120 million)."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    report: Optional[str] = ReportOption,
    report_worst: int = ReportWorstOption,
    items_per_file: int = ItemsPerFileOption,
    precision: str = PrecisionOption,
    scale: Optional[ScaleOptions] = None,
) -> int:
    """Optical flow, in pixels, between consecutive frames of image sequences or a video.

    Prints one line per pair as soon as it is done, or with --json {"input", "input2", "outputs",
    "mean_magnitude", "max_magnitude", "occluded"?, "epe"?, "epe_non_occluded"?} ("input" and "input2" are
    the two frames; a video's are VIDEO#INDEX), or {"input", "input2"?, "error"} for a pair that failed. A bad
    frame is reported once and its pairs skipped; the exit code is then 1. With --gt, --report FILE.html also
    writes a page to look at: the mean EPE, per folder, and the worst pairs with their flow and error maps.
    """
    source = check_source(model, weights, FlowTask.default_model)
    if not inputs:
        raise UsageError("give two images, a folder of frames, or a video (or - to read paths from stdin)")
    formats, packed = split_packed(formats, FLOW_FORMATS)
    folder = packed_folder(outputs, packed, FLOW_FORMATS)
    check_precision(precision)
    if packed and formats is None:  # packed files only: no per-pair files
        outputs = []
    task = FlowTask(inputs, source=source, outputs=outputs or [], formats=formats, gt=gt, max_flow=max_flow,
                    style=style, legend=legend, resize=resize, max_pixels=max_pixels, recursive=recursive,
                    start=start, end=end, step=step, direction=direction, occlusion_formats=occlusion_formats,
                    numerics=numerics, quiet=quiet, max_epe=max_epe, downscale=downscale)
    if report is not None and gt is None:
        raise UsageError("--report shows the scores against ground truth; give --gt with it")
    from perceiver_cli.tasks.report_html import html_report
    from perceiver_cli.tasks.report_pages import flow_summary

    arrays = array_dtypes(task.name, precision, both_directions=direction == "both")
    with html_report(report, report_worst, task.name, task, flow_summary, " ".join(inputs)) as page, \
            packed_outputs(folder, packed, task, arrays, items_per_file, FLOW_ENCODERS) as packers:
        return run_task(task, device=device, dtype=dtype, batch_size=batch_size, json_lines=json_lines,
                        quiet=quiet, scale=scale, listeners=[page.listen, *packers])


flow.epilog = examples("perceiver flow frame1.png frame2.png -o flow.png --legend bottom-right",
                       "perceiver flow scenes/ --recursive -o out/ --format flo,png --gt truth/ --json",
                       "perceiver flow clip.mp4 --start 2 --end 4 -o flow.mkv -o flow.npy")
