"""`perceiver draw-flow`: colour pictures of existing flow files, and the colour-wheel legend; no model."""

from __future__ import annotations

from typing import List, Optional

import typer

from perceiver_cli.bounds import OPTION_LIMITS, check_option
from perceiver_cli.commands.common import JsonOption, QuietOption, examples
from perceiver_cli.commands.flow import LegendOption, MaxFlowOption, StyleOption
from perceiver_cli.commands.completion import choices
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.engine import run_local
from perceiver_cli.tasks.draw_flow import DRAWN_VIDEO_FPS, DrawFlowTask
from perceiver_cli.tasks.report import Reporter
from perceiver_cli.io.store import place
from perceiver_cli.io.store_write import prepare_output
from perceiver_cli.io.writers import PICTURE_SUFFIXES, check_style


def draw_flow(
    inputs: List[str] = typer.Argument(
        None, metavar="FLOW", show_default=False,
        help="Flow files: .flo, 16-bit KITTI .png, .pfm or .npy (H, W, 2), recognised by their bytes; or the "
             "(T, H, W, 2) .npy flow writes for a video, drawn field by field (<stem>_000000, ...)."),
    outputs: List[str] = typer.Option(
        None, "--output", "-o", metavar="PATH", show_default=False,
        help="A picture file (one flow field), a folder (one <stem> picture per field), or a video (the fields "
             f"of one (T, H, W, 2) .npy, {DRAWN_VIDEO_FPS:g} fps). Default: <stem>.png beside each flow file."),
    picture_format: Optional[str] = typer.Option(
        None, "--format", "-f", metavar="EXT", show_default=False, autocompletion=choices(PICTURE_SUFFIXES),
        help="Picture format in folder outputs: png (default), jpg, webp or bmp."),
    max_flow: Optional[float] = MaxFlowOption,
    style: str = StyleOption,
    legend: Optional[str] = LegendOption,
    wheel: int = typer.Option(
        0, "--wheel", metavar="SIZE", show_default=False,
        help="Write only the colour-wheel legend, SIZE pixels square (3 to "
             f"{OPTION_LIMITS['--wheel']}), to -o (no FLOW): the rim is full scale."),
    against: Optional[str] = typer.Option(
        None, "--against", metavar="FILE", show_default=False,
        help="Draw each flow file's end-point-error map against this flow file (the ground truth), with a scale "
             "bar, and add \"epe\" (its mean over pixels known in both)."),
    max_epe: Optional[float] = typer.Option(
        None, "--max-epe", metavar="PX", show_default=False,
        help="With --against: this error is the top colour (default: each map's largest error)."),
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
) -> int:
    """Draw flow files as colour pictures (invalid pixels black), or write the colour-wheel legend alone.

    Prints one line per file, or with --json {"input", "outputs", "mean_magnitude", "max_magnitude", "pairs"?,
    "epe"?}, or
    {"input", "error"} for a file that cannot be read; the exit code is then 1.
    """
    if wheel:
        return _write_wheel(wheel, inputs, outputs, style)
    if not inputs:
        raise UsageError("give flow files to draw (.flo, KITTI .png, .pfm, .npy), or --wheel SIZE")
    task = DrawFlowTask(inputs, outputs=outputs or [], picture_format=picture_format, max_flow=max_flow,
                        style=style, legend=legend, against=against, max_epe=max_epe)
    return run_local(task, None, Reporter(task, json_lines=json_lines, quiet=quiet))


def _write_wheel(size: int, inputs: Optional[List[str]], outputs: Optional[List[str]], style: str) -> int:
    """Write the style's colour wheel alone to the one -o picture."""
    from perceiver_cli.io.flowviz import color_wheel
    from perceiver_cli.io.images import write_image

    if inputs:
        raise UsageError("--wheel writes the legend alone; give no flow files with it")
    if not outputs or len(outputs) != 1:
        raise UsageError("--wheel needs one -o picture file")
    check_option("--wheel", size, minimum=3)
    write_image(prepare_output(place(outputs[0])), color_wheel(size, check_style(style)))
    return 0


draw_flow.epilog = examples("perceiver draw-flow frame_0001.flo -o frame_0001.png --legend bottom-right",
                            "perceiver draw-flow video_flow.npy -o video_flow.mp4",
                            "perceiver draw-flow flow_occ/*.png -o pictures/ --max-flow 40",
                            "perceiver draw-flow ours.flo --against truth.flo -o error.png --max-epe 5",
                            "perceiver draw-flow --wheel 256 -o legend.png")
