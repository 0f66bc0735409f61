"""`perceiver fill-mask`: fill masked byte spans of texts given as arguments or read from stdin."""

from __future__ import annotations

from typing import List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           ScaleOptions, WeightsOption, check_source, examples, model_option,
                                           run_task, scale_options)
from perceiver_cli.bounds import OPTION_LIMITS
from perceiver_cli.commands.packed import (FeaturesOption, ItemsPerFileOption, PackedFolderOption,
                                           PackedFormatOption, packed_only)
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.packed_outputs import array_dtypes, packed_outputs
from perceiver_cli.tasks.fill_mask import MODELS, FillMaskTask


@scale_options
def fill_mask(
    texts: List[str] = typer.Argument(
        None, metavar="TEXT", show_default=False,
        help="Texts with [MASK] (the tool picks the span length) or [MASK:n] (exactly n UTF-8 bytes), "
             "or - to read one text per line from stdin."),
    texts_file: Optional[str] = typer.Option(
        None, "--texts", metavar="FILE", show_default=False,
        help="Also fill each line of FILE, a text file or a URL (s3://bucket/texts.txt), as - does stdin's."),
    model: Optional[str] = model_option(MODELS, FillMaskTask.default_model),
    weights: Optional[str] = WeightsOption,
    top_k: int = typer.Option(5, "--top-k", "-k", metavar="K", help="Fillings to show per text, best first."),
    max_span: int = typer.Option(
        12, "--max-span", metavar="N",
        help="Longest span, in bytes, that a bare [MASK] may stand for (one encoder pass per length; at most "
             f"{OPTION_LIMITS['--max-span']})."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    output: Optional[str] = PackedFolderOption,
    formats: Optional[str] = PackedFormatOption,
    items_per_file: int = ItemsPerFileOption,
    features: Optional[str] = FeaturesOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    scale: Optional[ScaleOptions] = None,
) -> int:
    """Fill masked spans of texts, byte by byte.

    Prints each text and its best fillings as soon as its batch is done, or with --json one line per text:
    {"input", "predictions": [{"text", "fills", "score", "log_prob"}], "masks": [{"length", "chosen",
    "length_scores"?}], "windows"?, "note"?}, best first; stdin lines also carry "line", and a bad line
    gives {"input", "line", "error"}. Bad stdin lines are reported and skipped; the exit code is then 1.
    """
    source = check_source(model, weights, FillMaskTask.default_model)
    if not texts and texts_file is None:
        raise UsageError("give texts with [MASK] or [MASK:n] to fill (or - to read one text per line from stdin)")
    task = FillMaskTask(texts or [], source=source, top_k=top_k, max_span=max_span, numerics=numerics,
                        features=features, texts_file=texts_file)
    packed = packed_only(output, formats, features)
    with packed_outputs(output, packed, task, array_dtypes(task.name, features=features),
                        items_per_file) as listeners:
        return run_task(task, device=device, dtype=dtype, json_lines=json_lines, quiet=quiet,
                        scale=scale, listeners=listeners)


fill_mask.epilog = examples('perceiver fill-mask "This is an [MASK] sentence."',
                            'perceiver fill-mask "The capital of France is [MASK:5]." -k 3 --json',
                            "perceiver fill-mask - --json < texts.txt > filled.jsonl",
                            "perceiver fill-mask --texts s3://bucket/texts.txt --json > filled.jsonl")
