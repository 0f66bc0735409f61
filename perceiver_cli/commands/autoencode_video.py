"""`perceiver autoencode-video`: reconstruct a video and its sound with the multimodal checkpoint, and name the action.

The video is read clip by clip (io.video.iter_clips), each clip is encoded once and decoded in chunks
(core.autoencode), and the reconstruction is written as it comes: a video output never holds more than
one clip. A .wav output gathers only the reconstructed sound (about 0.2 MB a second) and an .npz output
gathers every reconstructed frame, since numpy's archive is written in one piece.
"""

from __future__ import annotations

import math
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

import typer

from perceiver_cli.labels import KINETICS_LABELS, label_names as shared_label_names
from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, ModelOption, NumericsOption,
                                           WeightsOption, emit_json, load_task_model, refuse_repeated_outputs)
from perceiver_cli.errors import EXIT_OK, UsageError

AUDIO_SUFFIXES = (".wav",)
ARRAY_SUFFIXES = (".npz",)
# Shown in --help; tests check that it is the core's DEFAULT_CHUNK_SIZE.
CHUNK_SIZE_HELP = "Decoder queries per pass (pixels or audio patches); bounds memory. Default 4096."


def label_names(spec) -> list[str]:
    """Names of the checkpoint's labels: config id2label when it names them, else the shipped Kinetics-700 list."""
    return shared_label_names(spec.id2label, int(spec.num_labels), KINETICS_LABELS)


def _finite(value: float) -> Optional[float]:
    """A PSNR for JSON: None where it is infinite (a perfect reconstruction) or undefined."""
    return value if math.isfinite(value) else None


def _db(value: float) -> str:
    return f"{value:.2f} dB" if math.isfinite(value) else ("exact" if value > 0 else "n/a")


def _to_uint8(frames):
    """(T, H, W, 3) float in [0, 1] -> uint8, rounded."""
    import numpy as np

    return np.rint(np.asarray(frames) * 255.0).astype(np.uint8)


def _check_outputs(outputs: list[Path], video_suffixes: tuple[str, ...], side_by_side: bool) -> None:
    known = video_suffixes + AUDIO_SUFFIXES + ARRAY_SUFFIXES
    for path in outputs:
        suffix = path.suffix.lower()
        if suffix not in known:
            shown = f"'{suffix}'" if suffix else "no extension"
            raise UsageError(f"{path}: cannot write an output with {shown} (use {', '.join(known)})")
    refuse_repeated_outputs(outputs)
    if side_by_side and not any(p.suffix.lower() in video_suffixes for p in outputs):
        raise UsageError("--side-by-side needs a video output (-o with " + ", ".join(video_suffixes) + ")")


def autoencode_video(
    input: str = typer.Argument(..., metavar="VIDEO", help="A video file (mp4, avi, webm, mkv, mov, ...) with or without sound."),
    output: Optional[List[Path]] = typer.Option(
        None, "--output", "-o", metavar="FILE",
        help="Write the reconstruction: .mp4/.m4v/.mov/.mkv/.webm (video with sound), .wav (sound), "
             ".npz (arrays video, audio, label_logits). Repeat for several.",
    ),
    side_by_side: bool = typer.Option(False, "--side-by-side",
                                      help="Video outputs show the model's input and its reconstruction side by side."),
    top_k: int = typer.Option(5, "--top-k", "-k", metavar="K", help="How many labels to report."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", metavar="N", help=CHUNK_SIZE_HELP),
    model: Optional[str] = ModelOption,
    weights: Optional[Path] = WeightsOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_output: bool = JsonOption,
) -> int:
    """Reconstruct a video and its sound with the multimodal Perceiver IO, and report Kinetics-700 labels and PSNR.

    The video is resampled to 25 fps, centre-cropped square and resized to the model's frame size; the sound
    to mono at 48 kHz. Outputs have the same frame size, 25 fps and 48 kHz, and the input's duration.
    """
    import numpy as np
    import torch

    from perceiver_cli.core.autoencode import RunningSummary, autoencode_clip, clip_geometry, top_k as best
    from perceiver_cli.core.models import DEFAULT_CHUNK_SIZE
    from perceiver_cli.io.atomic import prepare_output
    from perceiver_cli.io.audio import write_npz, write_wav
    from perceiver_cli.io.video import SUPPORTED_VIDEO_OUTPUTS, VideoWriter, iter_clips, probe_video

    outputs = list(output or [])
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    chunk = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    if chunk < 1:
        raise UsageError(f"--chunk-size must be at least 1, got {chunk}")
    _check_outputs(outputs, SUPPORTED_VIDEO_OUTPUTS, side_by_side)

    info = probe_video(input)  # a missing or unreadable file, or no video stream, fails here, before loading
    for path in outputs:
        prepare_output(path, inputs=[input])
    net = load_task_model("autoencode-video", model, weights, "multimodal", device, dtype, numerics)
    geometry = clip_geometry(net.spec)
    names = label_names(net.spec)
    size, rate = geometry.image_size, geometry.sample_rate

    video_paths = [p for p in outputs if p.suffix.lower() in SUPPORTED_VIDEO_OUTPUTS]
    wav_paths = [p for p in outputs if p.suffix.lower() in AUDIO_SUFFIXES]
    npz_paths = [p for p in outputs if p.suffix.lower() in ARRAY_SUFFIXES]
    keep_audio = bool(wav_paths or npz_paths)
    audio_parts: list = []
    video_parts: list = []
    logit_rows: list = []
    clip_reports: list = []
    summary = RunningSummary()

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True)

    def warn(message: str) -> None:
        print(f"perceiver: warning: {message}", file=sys.stderr, flush=True)

    expected_frames = math.ceil(info.duration_s * geometry.fps) if info.duration_s > 0 else 0
    expected_clips = math.ceil(expected_frames / geometry.frames_per_clip) if expected_frames else None
    width = 2 * size if side_by_side else size
    progress = Progress(TextColumn("clips"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    with ExitStack() as stack:
        writers = [stack.enter_context(VideoWriter(p, fps=geometry.fps, width=width, height=size,
                                                   audio_sample_rate=rate)) for p in video_paths]
        stack.enter_context(progress)
        task = progress.add_task("clips", total=expected_clips)
        clips = iter_clips(input, frames_per_clip=geometry.frames_per_clip, fps=geometry.fps, size=size,
                           sample_rate=rate, samples_per_frame=geometry.samples_per_frame, on_warning=warn)
        for clip in clips:
            result = autoencode_clip(net, torch.from_numpy(clip.frames), torch.from_numpy(clip.audio),
                                     clip.n_valid_frames, chunk)
            summary.add(result)
            video = result.video.numpy()
            sound = result.audio.numpy()
            if writers:
                pictures = _to_uint8(video)
                if side_by_side:
                    pictures = np.concatenate([_to_uint8(clip.frames[:clip.n_valid_frames]), pictures], axis=2)
                for writer in writers:
                    for picture in pictures:
                        writer.write_frame(picture)
                    writer.write_audio(sound)
            if keep_audio:
                audio_parts.append(sound)
            if npz_paths:
                video_parts.append(video)
                logit_rows.append(result.label_logits.numpy())
            clip_reports.append({
                "start_s": round(float(clip.start_s), 6),
                "labels": [{"label": names[i], "index": i, "score": s} for i, s in best(result.probabilities, top_k)],
                "psnr_video": result.psnr_video,
                "psnr_audio": result.psnr_audio,
            })
            progress.advance(task)
        progress.stop()
        sound_all = np.concatenate(audio_parts) if keep_audio else None
        for path in wav_paths:
            write_wav(path, sound_all, rate)
        for path in npz_paths:
            write_npz(path, video=np.concatenate(video_parts).astype(np.float32, copy=False),
                      audio=sound_all.astype(np.float32, copy=False),
                      label_logits=np.stack(logit_rows).astype(np.float32, copy=False))
    # Leaving the ExitStack finished the video files; any error above removed them.

    overall = [{"label": names[i], "index": i, "score": s} for i, s in best(summary.probabilities, top_k)]
    if json_output:
        clips_json = [{**c, "psnr_video": _finite(c["psnr_video"]), "psnr_audio": _finite(c["psnr_audio"])}
                      for c in clip_reports]
        emit_json({"input": input, "outputs": [str(p) for p in outputs], "clips": clips_json,
                   "labels": overall, "psnr_video": _finite(summary.psnr_video),
                   "psnr_audio": _finite(summary.psnr_audio)})
    else:
        _print_report(input, clip_reports, overall, summary, geometry.frames_per_clip)
    for path in outputs:
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _print_report(input: str, clips: list, overall: list, summary, frames_per_clip: int) -> None:
    """The readable report on stdout: one row per clip, then the whole input."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Console(file=sys.stdout, highlight=False)
    out.print(f"{input}: {len(clips)} clip(s) of {frames_per_clip} frames", markup=False)
    table = Table()
    table.add_column("start", justify="right")
    table.add_column("top label")
    table.add_column("score", justify="right")
    table.add_column("PSNR video", justify="right")
    table.add_column("PSNR audio", justify="right")
    for clip in clips:
        top = clip["labels"][0]
        table.add_row(f"{clip['start_s']:.2f} s", escape(top["label"]), f"{top['score']:.3f}",
                      _db(clip["psnr_video"]), _db(clip["psnr_audio"]))
    out.print(table)
    out.print("whole input (mean of the clips' label probabilities):", markup=False)
    whole = Table()
    whole.add_column("#", justify="right")
    whole.add_column("label")
    whole.add_column("score", justify="right")
    for rank, item in enumerate(overall, 1):
        whole.add_row(str(rank), escape(item["label"]), f"{item['score']:.3f}")
    out.print(whole)
    out.print(f"PSNR video {_db(summary.psnr_video)}, audio {_db(summary.psnr_audio)}")
