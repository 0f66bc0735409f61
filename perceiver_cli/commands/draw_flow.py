"""`perceiver draw-flow`: colour pictures of existing flow files, and the colour-wheel legend; no model."""

from __future__ import annotations

from typing import List, Optional

import typer

from perceiver_cli.bounds import OPTION_LIMITS, check_option
from perceiver_cli.commands.common import JsonOption, QuietOption, examples
from perceiver_cli.commands.flow import LegendOption, MaxFlowOption, StyleOption
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.engine import run_local
from perceiver_cli.tasks.draw_flow import DrawFlowTask
from perceiver_cli.tasks.report import Reporter
from perceiver_cli.io.atomic import prepare_output
from perceiver_cli.io.writers import check_style


def draw_flow(
    inputs: List[str] = typer.Argument(
        None, metavar="FLOW", show_default=False,
        help="Flow files: .flo, 16-bit KITTI .png, .pfm or .npy (H, W, 2); recognised by their bytes."),
    outputs: List[str] = typer.Option(
        None, "--output", "-o", metavar="PATH", show_default=False,
        help="A picture file (one flow file), or a folder (one <stem> picture per flow file)."),
    picture_format: Optional[str] = typer.Option(
        None, "--format", "-f", metavar="EXT", show_default=False,
        help="Picture format in folder outputs: png (default), jpg, webp or bmp."),
    max_flow: Optional[float] = MaxFlowOption,
    style: str = StyleOption,
    legend: Optional[str] = LegendOption,
    wheel: int = typer.Option(
        0, "--wheel", metavar="SIZE", show_default=False,
        help="Write only the colour-wheel legend, SIZE pixels square (3 to "
             f"{OPTION_LIMITS['--wheel']}), to -o (no FLOW): the rim is full scale."),
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
) -> int:
    """Draw flow files as colour pictures (invalid pixels black), or write the colour-wheel legend alone.

    Prints one line per file, or with --json {"input", "outputs", "mean_magnitude", "max_magnitude"}, or
    {"input", "error"} for a file that cannot be read; the exit code is then 1.
    """
    if wheel:
        return _write_wheel(wheel, inputs, outputs, style)
    if not inputs:
        raise UsageError("give flow files to draw (.flo, KITTI .png, .pfm, .npy), or --wheel SIZE")
    task = DrawFlowTask(inputs, outputs=outputs or [], picture_format=picture_format, max_flow=max_flow,
                        style=style, legend=legend)
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
    write_image(prepare_output(outputs[0]), color_wheel(size, check_style(style)))
    return 0


draw_flow.epilog = examples("perceiver draw-flow frame_0001.flo -o frame_0001.png --legend bottom-right",
                            "perceiver draw-flow flow_occ/*.png -o pictures/ --max-flow 40",
                            "perceiver draw-flow --wheel 256 -o legend.png")
