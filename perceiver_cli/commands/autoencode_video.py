"""`perceiver autoencode-video`: reconstruct videos and their sound with the multimodal checkpoint, and name
the action."""

from __future__ import annotations

from typing import List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           ScaleOptions, WeightsOption, check_source, examples, model_option,
                                           run_task, scale_options)
from perceiver_cli.commands.packed import FeaturesOption, ItemsPerFileOption, packed_folder, split_packed
from perceiver_cli.commands.completion import comma_list
from perceiver_cli.errors import UsageError
from perceiver_cli.io.writers import refuse_repeated
from perceiver_cli.tasks.packed_outputs import array_dtypes, packed_outputs
from perceiver_cli.tasks.autoencode import (DEFAULT_CHUNK_SIZE, DEFAULT_FOLDER_FORMATS, FORMATS, MODELS,
                                            VIDEO_FORMATS, AutoencodeTask)


ChunkSizeOption = typer.Option(DEFAULT_CHUNK_SIZE, "--chunk-size", metavar="N",
                               help="Decoder queries per pass (pixels or audio patches); bounds memory.")


@scale_options
def autoencode_video(
    inputs: List[str] = typer.Argument(
        None, metavar="VIDEO", show_default=False,
        help="Video files (mp4, avi, webm, mkv, mov, ...; with or without sound), folders (searched recursively, "
             "sorted), glob patterns, or - for paths on stdin."),
    output: Optional[List[str]] = typer.Option(
        None, "--output", "-o", metavar="PATH", show_default=False,
        help=f"A folder: one set of outputs per video, named after it (see --format). For one video file, files: "
             f"{', '.join('.' + f for f in VIDEO_FORMATS)} (video with sound), .wav (sound), .npz (arrays video, "
             f"audio, label_logits); repeat -o for several."),
    formats: Optional[str] = typer.Option(
        None, "--format", "-f", metavar="LIST", show_default=False, autocompletion=comma_list(FORMATS),
        help=f"What an output folder gets per video, comma-separated from {', '.join(FORMATS)} "
             f"(default {','.join(DEFAULT_FOLDER_FORMATS)})."),
    model: Optional[str] = model_option(MODELS, AutoencodeTask.default_model),
    weights: Optional[str] = WeightsOption,
    side_by_side: bool = typer.Option(
        False, "--side-by-side", help="Video outputs show the model's input and its reconstruction side by side."),
    top_k: int = typer.Option(5, "--top-k", "-k", metavar="K", help="Labels to show per clip and per video."),
    chunk_size: int = ChunkSizeOption,
    items_per_file: int = ItemsPerFileOption,
    features: Optional[str] = FeaturesOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    scale: Optional[ScaleOptions] = None,
) -> int:
    """Reconstruct videos and their sound with the multimodal Perceiver IO; report Kinetics-700 labels and PSNR.

    Each video is resampled to 25 fps, centre-cropped square and resized to the model's frame size, its sound
    to mono at 48 kHz, and cut into clips of 16 frames. Outputs have that frame size, 25 fps, 48 kHz and the
    input's duration. Prints each video's clips, PSNRs and best labels as soon as it is done, or with --json
    one line per video: {"input", "outputs", "clips": [{"start_s", "predictions", "psnr_video",
    "psnr_audio"}], "predictions": [{"label", "index", "score"}], "psnr_video", "psnr_audio"} (PSNR in dB
    against the model's input, null when exact; the video's predictions are the mean of its clips'), or
    {"input", "error"} for a video that cannot be read. Unreadable videos are reported and skipped; the exit
    code is then 1.
    """
    source = check_source(model, weights, AutoencodeTask.default_model)
    if not inputs:
        raise UsageError("give video files, folders or glob patterns to autoencode (or - to read paths from stdin)")
    outputs = list(output or [])
    refuse_repeated(outputs)
    formats, packed = split_packed(formats, FORMATS)
    folder = packed_folder(outputs, packed, FORMATS)
    task = AutoencodeTask(inputs, outputs=outputs, formats=formats, source=source, top_k=top_k,
                          chunk_size=chunk_size, side_by_side=side_by_side, numerics=numerics, show_clips=not quiet,
                          features=features)
    if features is not None and packed is None and task.folder is None:
        raise UsageError("--features writes a .npy per video into an output folder (-o DIR), or a column of "
                         "--format parquet or wds")
    with packed_outputs(folder, packed, task, array_dtypes(task.name, features=features), items_per_file,
                        media=task.formats) as listeners:
        return run_task(task, device=device, dtype=dtype, json_lines=json_lines, quiet=quiet,
                        scale=scale, listeners=listeners)


autoencode_video.epilog = examples("perceiver autoencode-video clip.mp4 -o clip-recon.mp4 --side-by-side",
                                   "perceiver autoencode-video clips/ -o out/ --format mp4,npz --json > clips.jsonl",
                                   "perceiver autoencode-video talk.mov -o talk.wav -o talk.npz -k 3")
