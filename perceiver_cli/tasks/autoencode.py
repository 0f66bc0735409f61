"""The autoencode-video task: video files -> clips with sound (io.video.iter_clips) -> the multimodal
checkpoint, one clip at a time (core.autoencode) -> reconstructions written as they come, and
`{"input", "outputs", "clips", "predictions", "psnr_video", "psnr_audio"}` per video.

Each video is one item. Video outputs are written clip by clip and never hold more than one clip; a .wav
output gathers only the reconstructed sound (about 0.2 MB a second) and an .npz output every
reconstructed frame, since numpy's archive is written in one piece. Outputs are named by the user
(`-o FILE`, one video given) or made in a folder (`-o FOLDER`), one set per video named after its stem,
in the formats asked for.

Clips become reconstructions in autoencode_clips (VideoAutoencoder), and a video split over Ray workers is
autoencode_segments' business; this module plans items and outputs and makes records.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from perceiver_cli.bounds import check_option
from perceiver_cli.kinds import AUTOENCODE_VIDEO, names_for_task
from perceiver_cli.choices import DEFAULT_CHUNK_SIZE, VIDEO_FORMATS, parse_formats as parse_format_list
from perceiver_cli.choices import check_features
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.tasks.base import Item, ModelTask, Result, failure, problem_of
from perceiver_cli.tasks.inputs import STDIN_ARGUMENT, error_item, expand_arguments
from perceiver_cli.tasks.autoencode_clips import (ClipArrays, VideoAutoencoder, clip_visuals, read_guarded,
                                                  video_record, video_writers, write_clip, write_kept)
from perceiver_cli.tasks.autoencode_segments import ClipAssembler, ClipSegment, encode_segment, plan_segments
from perceiver_cli.tasks.report import heading, row, visible
from perceiver_cli.io.inputs import looks_like_glob
from perceiver_cli.io.store import place
from perceiver_cli.io.store import expand_inputs
from perceiver_cli.io.store_write import prepare_output
from perceiver_cli.tasks.report import progress_bar

MODELS = names_for_task(AUTOENCODE_VIDEO)  # the --model choices, from the kinds' rows
AUDIO_FORMATS = ("wav",)
ARRAY_FORMATS = ("npz",)
FORMATS = VIDEO_FORMATS + AUDIO_FORMATS + ARRAY_FORMATS
DEFAULT_FOLDER_FORMATS = ("mp4",)
PSNR_WIDTH = 10
FEATURES_SUFFIX = ".features.npy"  # a video's --features beside its other outputs in a folder


def expand_video_inputs(arguments: list[str]) -> list[Path | InputError]:
    """Video paths for command-line arguments: files as given, folders and globs by video extension."""
    from perceiver_cli.choices import VIDEO_EXTENSIONS

    return expand_inputs(arguments, VIDEO_EXTENSIONS, "video")


parse_formats = partial(parse_format_list, allowed=FORMATS)  # `mp4,wav` -> ("mp4", "wav"), as flow's --format


def _format_of(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _is_folder_output(text: str) -> bool:
    """An -o names a folder when it is one, ends with a separator, or has no extension."""
    path = place(text)
    if text.endswith(("/", os.sep)) or not path.suffix:
        return True
    # an existing folder named like an output file (result.mp4/) is refused by prepare_output, not written into
    return isinstance(path, Path) and path.is_dir() and _format_of(path) not in FORMATS


def _db(value: Optional[float]) -> str:
    """A PSNR from a record, right-aligned: None is a perfect reconstruction."""
    return (f"{value:.2f} dB" if value is not None else "exact").rjust(PSNR_WIDTH)


class AutoencodeTask(ModelTask):
    """Reconstruct videos and their sound with the multimodal checkpoint, and name the Kinetics-700 action."""

    name = AUTOENCODE_VIDEO
    progress_label = "autoencoding"
    default_model = MODELS[0]
    # One clip per forward pass: a clip is already 16 frames and about 800k decoder queries.
    cpu_batch_size = 1
    accelerator_batch_size = 1

    def __init__(self, inputs: Sequence[str], *, outputs: Sequence[str] = (), formats: Optional[str] = None,
                 source: Optional[str | Path] = None, top_k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 side_by_side: bool = False, numerics: str = "deepmind", show_clips: bool = False,
                 features: Optional[str] = None):
        if top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {top_k}")
        check_option("--chunk-size", chunk_size)
        self.inputs = [str(argument) for argument in inputs]
        super().__init__(source, numerics)
        self.top_k = top_k
        self.chunk_size = chunk_size
        self.side_by_side = side_by_side
        self.show_clips = show_clips
        check_features(features)
        self.features = features
        self.folder: Optional[Path] = None
        self.files: list[Path] = []
        self.formats: tuple[str, ...] = ()
        self._plan_outputs([str(output) for output in outputs], formats)

    def _plan_outputs(self, outputs: list[str], formats: Optional[str]) -> None:
        """Decide what -o means: one folder (with --format) or files named by the user (one video given)."""
        folders = [o for o in outputs if _is_folder_output(o)]
        if folders and len(outputs) > 1:
            raise UsageError(f"{folders[0]}: give one output folder, or output files, not both or several folders")
        if folders:
            self.folder = place(folders[0])
            self.formats = parse_formats(formats) if formats is not None else DEFAULT_FOLDER_FORMATS
        else:
            if formats is not None:
                raise UsageError("--format is for an output folder (-o FOLDER); an output file's format is its "
                                 "extension")
            self.files = [place(o) for o in outputs]
            for path in self.files:
                if _format_of(path) not in FORMATS:
                    shown = f"'{path.suffix.lower()}'" if path.suffix else "no extension"
                    raise UsageError(f"{path}: cannot write an output with {shown} "
                                     f"(use {', '.join('.' + f for f in FORMATS)}, or a folder)")
            self.formats = tuple(_format_of(path) for path in self.files)
            if self.files and not self._one_file_given():
                raise UsageError(f"{self.files[0]}: an output file is for one video file; for several videos, "
                                 f"give an output folder (-o FOLDER --format ...)")
        if self.side_by_side and not any(f in VIDEO_FORMATS for f in self.formats):
            raise UsageError("--side-by-side needs a video output (" + ", ".join(VIDEO_FORMATS) + ")")

    def _one_file_given(self) -> bool:
        """True when the inputs are one argument naming a file (or nothing there yet): not -, a folder or a glob."""
        if len(self.inputs) != 1 or self.inputs[0] == STDIN_ARGUMENT:
            return False
        path = place(self.inputs[0])
        if not isinstance(path, Path):  # a URL: an object unless it names a prefix
            return not self.inputs[0].endswith("/") and not looks_like_glob(self.inputs[0])
        return not path.is_dir() and (path.exists() or not looks_like_glob(self.inputs[0]))

    def _outputs_of(self, video: Path) -> tuple[str, ...]:
        if self.folder is not None:
            features = (f"{place(video).stem}{FEATURES_SUFFIX}",) if self.features and not self.arrays else ()
            return tuple(str(self.folder / name)
                         for name in (*(f"{place(video).stem}.{f}" for f in self.formats), *features))
        return tuple(str(path) for path in self.files)

    def items(self) -> list[Item]:
        expanded, names = expand_arguments(self.inputs, expand_video_inputs, kind="video")
        items = [error_item(i, found, names) if isinstance(found, InputError)
                 else Item(i, str(found), data=found, outputs=self._outputs_of(found))
                 for i, found in enumerate(expanded)]
        inputs = {place(item.data).resolve(): item.input for item in items if item.error is None}
        writers: dict[Path, str] = {}
        for item in items:
            for output in item.outputs:
                key = place(output).resolve()
                if key in inputs:
                    raise UsageError(f"{output}: output is the same file as input {inputs[key]}; choose another "
                                     f"output path")
                if key in writers:
                    raise UsageError(f"{output}: {writers[key]} and {item.input} would both write it; give the "
                                     f"videos different names or run them apart")
                writers[key] = item.input
                prepare_output(output, inputs=[item.data])
        self._listed = items
        return items

    def segments(self, count: int) -> Optional[list[Item]]:
        """A run over one video as about `count` ranges of whole clips (see autoencode_segments)."""
        return plan_segments(getattr(self, "_listed", []), count)

    def assembler(self, segments: list[Item]) -> ClipAssembler:
        """The driver's writer of each video's outputs from its segments' clips, in order."""
        return ClipAssembler(self, segments)

    def setup(self, runtime, model=None) -> None:
        self.model = self.model_for(runtime, model)
        self.autoencoder = VideoAutoencoder(self.model, runtime, self.chunk_size, self.top_k, self.side_by_side)

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        items = list(items)
        for item in items:
            if isinstance(item.data, ClipSegment):
                video_paths, _, npz_paths = self.outputs_by_kind(item.data.video.outputs)
                yield encode_segment(self.autoencoder, item, video_paths, npz_paths, self.features)
                continue
            if item.error is not None:
                yield failure(item, item.error)
                continue
            yield self.process(item, show_clips=self.show_clips and len(items) == 1)

    @staticmethod
    def outputs_by_kind(outputs: Iterable[str | Path]) -> tuple[list[Path], list[Path], list[Path]]:
        """A video's output paths as (videos, .wav files, .npz files)."""
        paths = [place(output) for output in outputs]
        return ([p for p in paths if _format_of(p) in VIDEO_FORMATS],
                [p for p in paths if _format_of(p) in AUDIO_FORMATS],
                [p for p in paths if _format_of(p) in ARRAY_FORMATS])

    def process(self, item: Item, show_clips: bool = False) -> Result:
        """Autoencode one video, writing its outputs; with `visuals` set, the result carries its first clip's
        frames and sound for a report's pictures."""
        warnings: list[str] = []
        visuals: Optional[dict] = {} if self.visuals else None
        arrays: Optional[dict] = {} if self.arrays or self.features else None
        try:
            record = self._autoencode(item, show_clips, warnings, visuals, arrays)
        except InputError as error:
            result = failure(item, problem_of(error, item.input))
        else:
            result = Result(item, record, outputs=list(item.outputs), visuals=visuals or None,
                            arrays={name: np.stack(parts) for name, parts in (arrays or {}).items()})
            self.write_features(item, result.arrays)
        result.warnings = warnings
        return result

    def _autoencode(self, item: Item, show_clips: bool, warnings: list[str],
                    visuals: Optional[dict] = None, arrays: Optional[dict] = None) -> dict[str, Any]:
        from perceiver_cli.core import autoencode as core

        autoencoder, g = self.autoencoder, self.autoencoder.geometry
        video_paths, wav_paths, npz_paths = self.outputs_by_kind(item.outputs)
        kept = ClipArrays(video=bool(npz_paths)) if wav_paths or npz_paths else None
        summary = core.RunningSummary()
        clip_records: list[dict[str, Any]] = []
        clips, expected = autoencoder.clips(item.data, warnings)
        with ExitStack() as stack:
            writers = video_writers(stack, video_paths, g, self.side_by_side)
            advance = stack.enter_context(progress_bar("clips", expected, quiet=not show_clips))
            for clip in read_guarded(clips, item.input):
                result = autoencoder.encode(clip)
                summary.add(result)
                video, sound = result.video.numpy(), result.audio.numpy()
                if writers:
                    write_clip(writers, autoencoder.pictures(clip, video), sound)
                if kept is not None:
                    kept.add(video, sound, result.label_logits.numpy())
                clip_records.append(autoencoder.clip_record(clip, result))
                if arrays is not None:  # per clip: its label logits, and its features when asked
                    self._keep_arrays(arrays, result)
                if visuals == {}:  # the first clip's frames and sound
                    visuals.update(clip_visuals(clip, video, sound))
                advance(1)
            write_kept(wav_paths, npz_paths, kept, g.sample_rate)
        # Leaving the ExitStack finished the video files; an error above removed them.
        return video_record(item, clip_records, summary, autoencoder.names, self.top_k)

    def write_features(self, item: Item, arrays: dict) -> None:
        """The video's per-clip features as the .npy its outputs name (a folder output without packing)."""
        from perceiver_cli.io.writers import write_array

        for output in item.outputs:
            if output.endswith(FEATURES_SUFFIX):
                write_array(output, arrays["features"])

    def _keep_arrays(self, arrays: dict, result) -> None:
        from perceiver_cli.core.trunk import latent_features

        arrays.setdefault("label_logits", []).append(result.label_logits.numpy())
        if self.features:
            arrays.setdefault("features", []).append(latent_features(result.latents[None], self.features)[0])

    def render(self, record: dict[str, Any]) -> list[str]:
        lines = [heading(record), row("   start", "video PSNR".rjust(PSNR_WIDTH), "audio PSNR".rjust(PSNR_WIDTH),
                                      " score", "label")]
        for clip in record["clips"]:
            top = clip["predictions"][0]
            lines.append(row(f"{clip['start_s']:>6.2f} s", _db(clip["psnr_video"]), _db(clip["psnr_audio"]),
                             f"{top['score']:.4f}", visible(top["label"])))
        blank = " " * PSNR_WIDTH
        for rank, prediction in enumerate(record["predictions"]):
            cells = ("   whole", _db(record["psnr_video"]), _db(record["psnr_audio"])) if rank == 0 else \
                (" " * 8, blank, blank)
            lines.append(row(*cells, f"{prediction['score']:.4f}", visible(prediction["label"])))
        lines.extend(row("   wrote", visible(output)) for output in record["outputs"])
        return lines
