"""One long video split over workers (the Ray engine): ranges of whole clips, each autoencoded by a worker
that decodes the video itself and hands back its clips' arrays and scores (`encode_segment`), and the
driver's assembler that writes the video's outputs clip by clip as segments arrive in order and reports the
video's one record, with whole-video scores over every clip, once its last segment is in."""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.tasks.autoencode_clips import (ClipArrays, VideoAutoencoder, read_guarded, video_record,
                                                  video_writers, write_clip, write_kept)
from perceiver_cli.tasks.base import Item, Result, failure, problem_of

# Clips per second of video when estimating how to split a video over workers (the real checkpoint's
# 16 frames at 25 fps); a worker cuts clips with its checkpoint's own geometry.
ESTIMATED_CLIPS_PER_SECOND = 25 / 16
LOST_SEGMENT = "no result came back for part of this video"


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
    features: Optional[np.ndarray] = None  # its --features (pooled or latents), computed where it was encoded


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


def plan_segments(listed: list[Item], count: int) -> Optional[list[Item]]:
    """A run over one video as about `count` ranges of whole clips for several workers (clips cut as in a
    one-process run); None when several videos can run (each worker takes whole videos) or none can."""
    from perceiver_cli.io.video import probe_video

    if sum(item.error is None and isinstance(item.data, (Path, str)) for item in listed) != 1:
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
            segment = ClipSegment(item, first, None if final else first + per_segment, final)
            segments.append(Item(len(segments), item.input, segment, key=item.key, outputs=item.outputs))
    return segments


def encode_segment(autoencoder: VideoAutoencoder, item: Item, video_paths: list[Path], npz_paths: list[Path],
                   features: Optional[str] = None) -> Result:
    """One segment's clips autoencoded here (clips before it are decoded and dropped), each with its `features`
    when asked; its video's failure when one comes up (the clips are read from the start, so every later
    segment meets it too)."""
    from perceiver_cli.core.trunk import latent_features

    segment: ClipSegment = item.data
    video = segment.video
    warnings: list[str] = []
    parts = SegmentParts([], autoencoder.geometry, autoencoder.names)
    if video.error is not None:
        parts.error = video.error
        return Result(item, {"input": item.input}, parts=parts)
    try:
        clips, _ = autoencoder.clips(video.data, warnings)
        for number, clip in enumerate(read_guarded(clips, video.input)):
            if number < segment.first:
                continue
            result = autoencoder.encode(clip)
            reconstruction, sound = result.video.numpy(), result.audio.numpy()
            parts.clips.append(ClipPart(
                autoencoder.pictures(clip, reconstruction) if video_paths else None,
                reconstruction if npz_paths else None, sound, result.label_logits.numpy(),
                result.probabilities.numpy(), result.video_squared_error, result.video.numel(),
                result.audio_squared_error, result.audio.numel(), autoencoder.clip_record(clip, result),
                latent_features(result.latents[None], features)[0] if features else None))
            if segment.last is not None and number >= segment.last - 1:
                break
    except InputError as error:
        parts.clips, parts.error = [], problem_of(error, video.input)
    return Result(item, {"input": item.input}, parts=parts, warnings=warnings)


class ClipAssembler:
    """The driver's side of videos split into segments: each video's outputs written clip by clip as its
    segments arrive in order, and its one record (whole-video scores over every clip) once its last is in."""

    def __init__(self, task, segments: list[Item]):
        self.task = task
        self.segments = {segment.index: segment.data for segment in segments}
        self.videos = [segment.data.video for segment in segments if segment.data.first == 0]
        self.done: set[int] = set()  # indices of the videos reported
        self._open: Optional[dict[str, Any]] = None  # the video being assembled

    def __enter__(self) -> "ClipAssembler":
        return self

    def _start(self, video: Item) -> dict[str, Any]:
        from perceiver_cli.core import autoencode as core

        videos, wav, npz = self.task.outputs_by_kind(video.outputs)
        return {"video": video, "videos": videos, "wav": wav, "npz": npz, "stack": ExitStack(), "writers": None,
                "kept": ClipArrays(video=bool(npz)) if wav or npz else None, "summary": core.RunningSummary(),
                "clips": [], "warnings": [], "error": None, "geometry": None, "names": None,
                "arrays": {"label_logits": [], "features": []}}

    def _writers(self, state: dict[str, Any]) -> list:
        if state["writers"] is None:
            state["writers"] = video_writers(state["stack"], state["videos"], state["geometry"], self.task.side_by_side)
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
                    write_clip(self._writers(state), clip.pictures, clip.sound)
                    if state["kept"] is not None:
                        state["kept"].add(clip.video, clip.sound, clip.label_logits)
                    state["summary"].add(_ClipNumbers(clip, torch))
                    state["clips"].append(clip.record)
                    self._keep_arrays(state["arrays"], clip)
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
                write_kept(state["wav"], state["npz"], state["kept"], state["geometry"].sample_rate)
            except BaseException as exc:
                state["stack"].__exit__(type(exc), exc, exc.__traceback__)
                raise
            state["stack"].__exit__(None, None, None)
        if state["error"] is not None:
            result = failure(video, state["error"])
        else:
            record = video_record(video, state["clips"], state["summary"], state["names"], self.task.top_k)
            arrays = {name: np.stack(kept) for name, kept in state["arrays"].items() if kept}
            result = Result(video, record, outputs=list(video.outputs), arrays=arrays)
            self.task.write_features(video, arrays)
        result.warnings = state["warnings"]
        return result

    @staticmethod
    def _keep_arrays(arrays: dict[str, list], clip: ClipPart) -> None:
        """A clip's arrays for its video's result, as a one-process run keeps them: label logits, features."""
        arrays["label_logits"].append(clip.label_logits)
        if clip.features is not None:
            arrays["features"].append(clip.features)

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
