"""The autoencode-video task: video files -> clips with sound (io.video.iter_clips) -> the multimodal
checkpoint, one clip at a time (core.autoencode) -> reconstructions written as they come, and
`{"input", "outputs", "clips", "predictions", "psnr_video", "psnr_audio"}` per video.

Each video is one item. Video outputs are written clip by clip and never hold more than one clip; a .wav
output gathers only the reconstructed sound (about 0.2 MB a second) and an .npz output every
reconstructed frame, since numpy's archive is written in one piece. Outputs are named by the user
(`-o FILE`, one video given) or made in a folder (`-o FOLDER`), one set per video named after its stem,
in the formats asked for.
"""

from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from perceiver_cli.bounds import check_option
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.labels import KINETICS_LABELS, label_names as shared_label_names
from perceiver_cli.tasks.base import Item, Result, Task, failure, problem_of
from perceiver_cli.tasks.classify import STDIN_ARGUMENT, error_item, expand_arguments
from perceiver_cli.tasks.report import heading, row, visible
from perceiver_cli.io.inputs import expand_inputs, looks_like_glob
from perceiver_cli.io.atomic import prepare_output
from perceiver_cli.tasks.report import progress_bar

MODELS = ("multimodal",)
# The formats of io.video.SUPPORTED_VIDEO_OUTPUTS (tests keep them equal; io.video is not imported for --help).
VIDEO_FORMATS = ("mp4", "m4v", "mov", "mkv", "webm", "avi")
AUDIO_FORMATS = ("wav",)
ARRAY_FORMATS = ("npz",)
FORMATS = VIDEO_FORMATS + AUDIO_FORMATS + ARRAY_FORMATS
DEFAULT_FOLDER_FORMATS = ("mp4",)
# core.models.DEFAULT_CHUNK_SIZE (tests keep them equal; core imports torch, which --help must not).
DEFAULT_CHUNK_SIZE = 4096
PSNR_WIDTH = 10
LOST_SEGMENT = "no result came back for part of this video"


def label_names(spec) -> list[str]:
    """Names of the checkpoint's labels: config id2label when it names them, else the shipped Kinetics-700 list."""
    return shared_label_names(spec.id2label, int(spec.num_labels), KINETICS_LABELS)


def expand_video_inputs(arguments: list[str]) -> list[Path | InputError]:
    """Video paths for command-line arguments: files as given, folders and globs by video extension."""
    from perceiver_cli.io.video import VIDEO_EXTENSIONS

    return expand_inputs(arguments, VIDEO_EXTENSIONS, "video")


def parse_formats(text: str) -> tuple[str, ...]:
    """`mp4,wav,npz` -> ("mp4", "wav", "npz"); a usage error for an unknown or repeated format."""
    chosen: list[str] = []
    for name in (part.strip().lower().lstrip(".") for part in text.split(",")):
        if name not in FORMATS:
            raise UsageError(f"--format: unknown format '{name}' (use {', '.join(FORMATS)})")
        if name in chosen:
            raise UsageError(f"--format: '{name}' given twice")
        chosen.append(name)
    return tuple(chosen)


def _format_of(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _is_folder_output(text: str) -> bool:
    """An -o names a folder when it is one, ends with a separator, or has no extension."""
    path = Path(text)
    if text.endswith(("/", os.sep)) or not path.suffix:
        return True
    # an existing folder named like an output file (result.mp4/) is refused by prepare_output, not written into
    return path.is_dir() and _format_of(path) not in FORMATS


def _finite(value: float) -> Optional[float]:
    """A PSNR for JSON: None where it is infinite (a perfect reconstruction) or undefined."""
    return value if math.isfinite(value) else None


def _db(value: Optional[float]) -> str:
    """A PSNR from a record, right-aligned: None is a perfect reconstruction."""
    return (f"{value:.2f} dB" if value is not None else "exact").rjust(PSNR_WIDTH)


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float in [0, 1] -> uint8, rounded."""
    return np.rint(np.asarray(frames) * 255.0).astype(np.uint8)


def _predictions(pairs: list[tuple[int, float]], names: list[str]) -> list[dict[str, Any]]:
    return [{"label": names[i], "index": i, "score": s} for i, s in pairs]


class ClipArrays:
    """A reconstruction gathered clip by clip: what an .npz holds, or the sound alone for a .wav."""

    def __init__(self, video: bool = True):
        self.keep_video = video
        self.video: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.label_logits: list[np.ndarray] = []

    def add(self, video: np.ndarray, audio: np.ndarray, label_logits: np.ndarray) -> None:
        """Keep one clip's reconstructed frames (T, H, W, 3), samples (S,) and label logits (num_labels,)."""
        if self.keep_video:
            self.video.append(video)
            self.label_logits.append(label_logits)
        self.audio.append(audio)

    def sound(self) -> np.ndarray:
        """Every clip's samples, in order, float32."""
        return np.concatenate(self.audio).astype(np.float32, copy=False)

    def arrays(self) -> dict[str, np.ndarray]:
        """{"video": (T, H, W, 3), "audio": (S,), "label_logits": (clips, num_labels)}, all float32."""
        return {"video": np.concatenate(self.video).astype(np.float32, copy=False), "audio": self.sound(),
                "label_logits": np.stack(self.label_logits).astype(np.float32, copy=False)}


def _outputs_by_kind(outputs: Iterable[str | Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """A video's output paths as (videos, .wav files, .npz files)."""
    paths = [Path(output) for output in outputs]
    return ([p for p in paths if _format_of(p) in VIDEO_FORMATS], [p for p in paths if _format_of(p) in AUDIO_FORMATS],
            [p for p in paths if _format_of(p) in ARRAY_FORMATS])


def _write_clip(writers: list, pictures: np.ndarray, sound: np.ndarray) -> None:
    """One clip's frames and sound onto every video writer."""
    for writer in writers:
        for picture in pictures:
            writer.write_frame(picture)
        writer.write_audio(sound)


def _write_kept(wav_paths: list[Path], npz_paths: list[Path], kept: Optional["ClipArrays"], sample_rate: int) -> None:
    """The whole video's sound (.wav) and arrays (.npz), from every clip kept."""
    from perceiver_cli.io.audio import write_npz, write_wav

    for path in wav_paths:
        write_wav(path, kept.sound(), sample_rate)
    for path in npz_paths:
        write_npz(path, **kept.arrays())


# Clips per second of video when estimating how to split a video over workers (the real checkpoint's
# 16 frames at 25 fps); a worker cuts clips with its checkpoint's own geometry.
ESTIMATED_CLIPS_PER_SECOND = 25 / 16


@dataclass
class ClipSegment:
    """One video's clips first <= n < last (last None: to its end), for one worker; `final` when it is the
    video's last segment."""

    video: Item
    first: int
    last: Optional[int]
    final: bool


@dataclass
class ClipPart:
    """What a worker hands the driver for one clip: its arrays for the outputs, its scores and its record."""

    pictures: Optional[np.ndarray]  # (T, H, W', 3) uint8 frames for video outputs
    video: Optional[np.ndarray]  # (T, H, W, 3) float32 reconstruction, for an .npz
    sound: np.ndarray
    label_logits: np.ndarray
    probabilities: np.ndarray
    video_squared_error: float
    video_values: int
    audio_squared_error: float
    audio_values: int
    record: dict[str, Any]


@dataclass
class SegmentParts:
    """A segment's clips, or why its video failed, with what the driver needs to write the video's outputs."""

    clips: list[ClipPart]
    geometry: Any = None
    names: Optional[list[str]] = None
    error: Optional[str] = None


class _Count:
    """A number of values, standing in for a tensor where only its numel() is read."""

    def __init__(self, count: int):
        self.count = count

    def numel(self) -> int:
        """The number of values."""
        return self.count


class AutoencodeTask(Task):
    """Reconstruct videos and their sound with the multimodal checkpoint, and name the Kinetics-700 action."""

    name = "autoencode-video"
    progress_label = "autoencoding"
    default_model = "multimodal"
    # One clip per forward pass: a clip is already 16 frames and about 800k decoder queries.
    cpu_batch_size = 1
    accelerator_batch_size = 1

    def __init__(self, inputs: Sequence[str], *, outputs: Sequence[str] = (), formats: Optional[str] = None,
                 source: Optional[str | Path] = None, top_k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 side_by_side: bool = False, numerics: str = "deepmind", show_clips: bool = False):
        if top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {top_k}")
        check_option("--chunk-size", chunk_size)
        self.inputs = [str(argument) for argument in inputs]
        self.source = source if source is not None else self.default_model
        self.top_k = top_k
        self.chunk_size = chunk_size
        self.side_by_side = side_by_side
        self.numerics = numerics
        self.show_clips = show_clips
        self.folder: Optional[Path] = None
        self.files: list[Path] = []
        self.formats: tuple[str, ...] = ()
        self._plan_outputs([str(output) for output in outputs], formats)
        self.model = None

    def _plan_outputs(self, outputs: list[str], formats: Optional[str]) -> None:
        """Decide what -o means: one folder (with --format) or files named by the user (one video given)."""
        folders = [o for o in outputs if _is_folder_output(o)]
        if folders and len(outputs) > 1:
            raise UsageError(f"{folders[0]}: give one output folder, or output files, not both or several folders")
        if folders:
            self.folder = Path(folders[0])
            self.formats = parse_formats(formats) if formats is not None else DEFAULT_FOLDER_FORMATS
        else:
            if formats is not None:
                raise UsageError("--format is for an output folder (-o FOLDER); an output file's format is its "
                                 "extension")
            self.files = [Path(o) for o in outputs]
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
        path = Path(self.inputs[0])
        return not path.is_dir() and (path.exists() or not looks_like_glob(self.inputs[0]))

    def _outputs_of(self, video: Path) -> tuple[str, ...]:
        if self.folder is not None:
            return tuple(str(self.folder / f"{video.stem}.{f}") for f in self.formats)
        return tuple(str(path) for path in self.files)

    def items(self) -> list[Item]:
        expanded, names = expand_arguments(self.inputs, expand_video_inputs, kind="video")
        items = [error_item(i, found, names) if isinstance(found, InputError)
                 else Item(i, str(found), data=found, outputs=self._outputs_of(found))
                 for i, found in enumerate(expanded)]
        inputs = {Path(item.data).resolve(): item.input for item in items if item.error is None}
        writers: dict[Path, str] = {}
        for item in items:
            for output in item.outputs:
                key = Path(output).resolve()
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
        """A run over one video as about `count` ranges of whole clips for several workers (clips cut as in a
        one-process run); None when several videos can run (each worker takes whole videos) or none can."""
        from perceiver_cli.io.video import probe_video

        listed = getattr(self, "_listed", [])
        if sum(item.error is None and isinstance(item.data, Path) for item in listed) != 1:
            return None
        estimates = []
        for item in listed:
            try:
                seconds = probe_video(item.data).duration_s if item.error is None else 0.0
            except InputError:  # its worker says why
                seconds = 0.0
            estimates.append(max(1, math.ceil((seconds or 0.0) * ESTIMATED_CLIPS_PER_SECOND)))
        per_segment = max(1, math.ceil(sum(estimates) / max(1, count)))
        segments: list[Item] = []
        for item, clips in zip(listed, estimates):
            firsts = list(range(0, clips, per_segment))
            for k, first in enumerate(firsts):
                final = k == len(firsts) - 1
                segments.append(Item(len(segments), item.input, ClipSegment(item, first,
                                                                           None if final else first + per_segment,
                                                                           final),
                                     key=item.key, outputs=item.outputs))
        return segments

    def assembler(self, segments: list[Item]) -> "_ClipAssembler":
        """The driver's writer of each video's outputs from its segments' clips, in order."""
        return _ClipAssembler(self, segments)

    def _pictures(self, clip, reconstruction: np.ndarray) -> np.ndarray:
        """A clip's frames as video outputs show them: the reconstruction, beside the input with --side-by-side."""
        pictures = _to_uint8(reconstruction)
        if self.side_by_side:
            pictures = np.concatenate([_to_uint8(clip.frames[:clip.n_valid_frames]), pictures], axis=2)
        return pictures

    def _clip_record(self, clip, result) -> dict[str, Any]:
        """One clip's part of a video's record: where it starts, its predictions and its PSNRs."""
        from perceiver_cli.core import autoencode as core

        return {"start_s": round(float(clip.start_s), 6),
                "predictions": _predictions(core.top_k(result.probabilities, self.top_k), self.names),
                "psnr_video": _finite(result.psnr_video), "psnr_audio": _finite(result.psnr_audio)}

    def _video_record(self, video: Item, clip_records: list[dict[str, Any]], summary, names) -> dict[str, Any]:
        """A video's record: its outputs, its clips' records, and the whole video's predictions and PSNRs."""
        from perceiver_cli.core import autoencode as core

        return {"input": video.input, "outputs": [str(Path(output)) for output in video.outputs],
                "clips": clip_records,
                "predictions": _predictions(core.top_k(summary.probabilities, self.top_k), names),
                "psnr_video": _finite(summary.psnr_video), "psnr_audio": _finite(summary.psnr_audio)}

    def _video_writers(self, stack: ExitStack, paths: list[Path], g) -> list:
        """Video writers for `paths`, entered on `stack` (leaving it finishes them; an error removes them)."""
        from perceiver_cli.io.video import VideoWriter

        width = 2 * g.image_size if self.side_by_side else g.image_size
        return [stack.enter_context(VideoWriter(path, fps=g.fps, width=width, height=g.image_size,
                                                audio_sample_rate=g.sample_rate)) for path in paths]

    def _segment(self, item: Item) -> Result:
        """One segment's clips autoencoded here (clips before it are decoded and dropped); its video's failure
        when one comes up (the clips are read from the start, so every later segment meets it too)."""
        import torch

        from perceiver_cli.core import autoencode as core

        segment: ClipSegment = item.data
        video = segment.video
        warnings: list[str] = []
        parts = SegmentParts([], self.geometry, self.names)
        if video.error is not None:
            parts.error = video.error
            return Result(item, {"input": item.input}, parts=parts)
        video_paths, _, npz_paths = _outputs_by_kind(video.outputs)
        try:
            clips, _ = self._clips(video, warnings)
            for number, clip in enumerate(_read_guarded(clips, video.input)):
                if number < segment.first:
                    continue
                result = core.autoencode_clip(self.model, torch.from_numpy(clip.frames),
                                              torch.from_numpy(clip.audio), clip.n_valid_frames, self.chunk_size,
                                              device=self.runtime.device, dtype=self.runtime.dtype)
                reconstruction, sound = result.video.numpy(), result.audio.numpy()
                parts.clips.append(ClipPart(
                    self._pictures(clip, reconstruction) if video_paths else None,
                    reconstruction if npz_paths else None, sound, result.label_logits.numpy(),
                    result.probabilities.numpy(), result.video_squared_error, result.video.numel(),
                    result.audio_squared_error, result.audio.numel(), self._clip_record(clip, result)))
                if segment.last is not None and number >= segment.last - 1:
                    break
        except InputError as error:
            parts.clips, parts.error = [], problem_of(error, video.input)
        return Result(item, {"input": item.input}, parts=parts, warnings=warnings)

    def setup(self, runtime, model=None) -> None:
        from perceiver_cli.core.autoencode import clip_geometry
        model = self.model_for(runtime, model)
        self.model = model
        self.geometry = clip_geometry(model.spec)
        self.names = label_names(model.spec)

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        items = list(items)
        for item in items:
            if isinstance(item.data, ClipSegment):
                yield self._segment(item)
                continue
            if item.error is not None:
                yield failure(item, item.error)
                continue
            yield self.process(item, show_clips=self.show_clips and len(items) == 1)

    def _clips(self, item: Item, warnings: list[str]) -> tuple[Iterator, Optional[int]]:
        """The item's clips and how many there will be (None when the file does not say)."""
        from perceiver_cli.io.video import clips_from_arrays, iter_clips, probe_video

        g = self.geometry
        if isinstance(item.data, Path):
            info = probe_video(item.data)  # a file that is no video fails here, before any output is opened
            frames = math.ceil(info.duration_s * g.fps) if info.duration_s > 0 else 0
            clips = iter_clips(item.data, frames_per_clip=g.frames_per_clip, fps=g.fps, size=g.image_size,
                               sample_rate=g.sample_rate, samples_per_frame=g.samples_per_frame,
                               on_warning=warnings.append)
            return clips, (math.ceil(frames / g.frames_per_clip) if frames else None)
        frames, audio = item.data  # the Python API: frames at the model's rate, sound at its rate
        clips = clips_from_arrays(frames, audio, frames_per_clip=g.frames_per_clip, fps=g.fps, size=g.image_size,
                                  samples_per_frame=g.samples_per_frame)
        return clips, math.ceil(len(frames) / g.frames_per_clip)

    def process(self, item: Item, gather: Optional[ClipArrays] = None, show_clips: bool = False) -> Result:
        """Autoencode one video, writing its outputs; `gather` also receives every clip's arrays."""
        warnings: list[str] = []
        try:
            record = self._autoencode(item, gather, show_clips, warnings)
        except InputError as error:
            result = failure(item, problem_of(error, item.input))
        else:
            result = Result(item, record, outputs=list(item.outputs))
        result.warnings = warnings
        return result

    def _autoencode(self, item: Item, gather: Optional[ClipArrays], show_clips: bool,
                    warnings: list[str]) -> dict[str, Any]:
        import torch

        from perceiver_cli.core import autoencode as core

        g = self.geometry
        video_paths, wav_paths, npz_paths = _outputs_by_kind(item.outputs)
        kept = ClipArrays(video=bool(npz_paths)) if wav_paths or npz_paths else None
        summary = core.RunningSummary()
        clip_records: list[dict[str, Any]] = []
        clips, expected = self._clips(item, warnings)
        with ExitStack() as stack:
            writers = self._video_writers(stack, video_paths, g)
            advance = stack.enter_context(progress_bar("clips", expected, quiet=not show_clips))
            for clip in _read_guarded(clips, item.input):
                result = core.autoencode_clip(self.model, torch.from_numpy(clip.frames),
                                              torch.from_numpy(clip.audio), clip.n_valid_frames, self.chunk_size,
                                              device=self.runtime.device, dtype=self.runtime.dtype)
                summary.add(result)
                video, sound = result.video.numpy(), result.audio.numpy()
                if writers:
                    _write_clip(writers, self._pictures(clip, video), sound)
                for sink in (kept, gather):
                    if sink is not None:
                        sink.add(video, sound, result.label_logits.numpy())
                clip_records.append(self._clip_record(clip, result))
                advance(1)
            _write_kept(wav_paths, npz_paths, kept, g.sample_rate)
        # Leaving the ExitStack finished the video files; an error above removed them.
        return self._video_record(item, clip_records, summary, self.names)

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


def _read_guarded(clips: Iterator, name: str) -> Iterator:
    """The clips of one video; a reader fault other than an InputError also fails only that video."""
    while True:
        try:
            clip = next(clips)
        except StopIteration:
            return
        except InputError:
            raise
        except Exception as error:  # a decoder fault in one file must not end a run over many
            raise InputError(f"{name}: {problem_of(error)}") from None
        yield clip


class _ClipAssembler:
    """The driver's side of videos split into segments: each video's outputs written clip by clip as its
    segments arrive in order, and its one record (whole-video scores over every clip) once its last is in."""

    def __init__(self, task: AutoencodeTask, segments: list[Item]):
        self.task = task
        self.segments = {segment.index: segment.data for segment in segments}
        self.videos = [segment.data.video for segment in segments if segment.data.first == 0]
        self.done: set[int] = set()  # indices of the videos reported
        self._open: Optional[dict[str, Any]] = None  # the video being assembled

    def __enter__(self) -> "_ClipAssembler":
        return self

    def _start(self, video: Item) -> dict[str, Any]:
        from perceiver_cli.core import autoencode as core

        videos, wav, npz = _outputs_by_kind(video.outputs)
        return {"video": video, "videos": videos, "wav": wav, "npz": npz, "stack": ExitStack(), "writers": None,
                "kept": ClipArrays(video=bool(npz)) if wav or npz else None, "summary": core.RunningSummary(),
                "clips": [], "warnings": [], "error": None, "geometry": None, "names": None}

    def _writers(self, state: dict[str, Any]) -> list:
        if state["writers"] is None:
            state["writers"] = self.task._video_writers(state["stack"], state["videos"], state["geometry"])
        return state["writers"]

    def _fail(self, state: dict[str, Any], problem: str) -> None:
        state["error"] = problem
        state["stack"].__exit__(InputError, InputError(problem), None)  # partial video files are removed

    def add(self, result: Result) -> list[Result]:
        """Take one segment's result; returns its video's result when this was the video's last segment."""
        import torch

        segment: ClipSegment = self.segments[result.item.index]
        if self._open is None or self._open["video"] is not segment.video:
            self._open = self._start(segment.video)
        state = self._open
        for warning in result.warnings:
            if warning not in state["warnings"]:
                state["warnings"].append(warning)
        parts: Optional[SegmentParts] = result.parts
        if state["error"] is None:
            if parts is None or parts.error is not None:
                self._fail(state, parts.error if parts is not None else result.record.get("error", LOST_SEGMENT))
            else:
                state["geometry"], state["names"] = parts.geometry, parts.names
                for clip in parts.clips:
                    _write_clip(self._writers(state), clip.pictures, clip.sound)
                    if state["kept"] is not None:
                        state["kept"].add(clip.video, clip.sound, clip.label_logits)
                    state["summary"].add(_ClipNumbers(clip, torch))
                    state["clips"].append(clip.record)
        if not segment.final:
            return []
        self._open = None
        self.done.add(segment.video.index)
        return [self._finish(state)]

    def _finish(self, state: dict[str, Any]) -> Result:
        video: Item = state["video"]
        if state["error"] is None:
            try:
                self._writers(state)
                _write_kept(state["wav"], state["npz"], state["kept"], state["geometry"].sample_rate)
            except BaseException as exc:
                state["stack"].__exit__(type(exc), exc, exc.__traceback__)
                raise
            state["stack"].__exit__(None, None, None)
        if state["error"] is not None:
            result = failure(video, state["error"])
        else:
            record = self.task._video_record(video, state["clips"], state["summary"], state["names"])
            result = Result(video, record, outputs=list(video.outputs))
        result.warnings = state["warnings"]
        return result

    def finish(self) -> list[Result]:
        """Failures of the videos whose last segment never came back."""
        results = []
        if self._open is not None:
            self._fail(self._open, LOST_SEGMENT)
            self.done.add(self._open["video"].index)
            results.append(self._finish(self._open))
            self._open = None
        results += [failure(video, LOST_SEGMENT) for video in self.videos if video.index not in self.done]
        return results

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._open is not None and self._open["error"] is None:
            self._open["stack"].__exit__(exc_type or InputError, exc or InputError(LOST_SEGMENT), tb)
        return False


class _ClipNumbers:
    """One clip's scores as core.autoencode.RunningSummary.add reads them."""

    def __init__(self, clip: ClipPart, torch):
        self.probabilities = torch.from_numpy(clip.probabilities)
        self.video_squared_error, self.audio_squared_error = clip.video_squared_error, clip.audio_squared_error
        self.video, self.audio = _Count(clip.video_values), _Count(clip.audio_values)
