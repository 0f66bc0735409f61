"""Video files: probe them, stream their frames, cut model clips with sound, write H.264 video.

Everything here streams: a decoder is read frame by frame and at most one clip (plus a few decoded
frames held to repair timestamps) is in memory at once. No torch, no model knowledge: the model's
clip geometry arrives as plain numbers.

What callers rely on:
- Time origin: a video's time 0 is the timestamp of its first picture; the audio is placed on that
  same clock, so sound keeps the sync the file declares.
- Frame rate conversion (`iter_clips`): output frame k stands for time k/fps and is the source frame
  on screen at that moment (the latest one whose timestamp is <= k/fps). The last source frame stays
  on screen for its own duration, so a 2.0 s clip gives 50 frames at 25 fps.
- Picture geometry (`iter_clips`): centre square crop (the longer side is cut evenly on both ends),
  then resize to size x size with cv2.INTER_AREA when shrinking and cv2.INTER_LINEAR when enlarging.
  Pixels become float32 in [0, 1]. Non-square pixel aspect ratios are ignored.
- Rotation: frames come out as a player shows them. The display matrix FFmpeg attaches to each
  decoded frame is applied (rounded to whole quarter turns; mirroring is not applied); without one,
  an old-style 'rotate' stream tag (clockwise degrees) is. `probe_video` reports the displayed size.
- Padding (`iter_clips`): the last clip repeats its last real frame up to frames_per_clip and its
  audio is zero-padded; `Clip.n_valid_frames` counts the real frames so outputs can be trimmed.
- Audio (`iter_clips`): the first audio track, decoded by PyAV and resampled to mono float32 at
  sample_rate, clipped to [-1, 1]. Clip i holds samples [i*T*spf, (i+1)*T*spf) of that track (T = frames_per_clip,
  spf = samples_per_frame), which lines up with the video when sample_rate == fps * spf.
- Warnings: problems that do not stop the work (no audio track, an audio track that cannot be
  decoded, which becomes silence) are reported as one-line messages, each starting with the file
  name, through the `on_warning` callback; without one they go to `warnings.warn` as `MediaWarning`.
- Output: `io.video_write` (VideoWriter), importable from here too.
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, TypeVar

import av
import cv2
import numpy as np

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.video_write import (  # noqa: F401 (the writing half, importable here as before)
    _OUTPUT_KINDS, ALL_VIDEO_OUTPUTS, SILENT_VIDEO_OUTPUTS, SUPPORTED_VIDEO_OUTPUTS, PathLike, VideoWriter, _name,
    _reason)
from perceiver_cli.io.location import is_remote
from perceiver_cli.io.video_audio import WarningCallback, _AudioQueue, media_source

# Decoded frames held back to repair timestamps that arrive out of order (AVI with packed B-frames).
_REORDER_DEPTH = 4


class MediaWarning(UserWarning):
    """A problem with a media file that the work goes on past (for example a missing audio track)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares about itself, read without decoding pictures."""

    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int  # an estimate: the container's count when it has one, else duration * fps
    has_audio: bool
    audio_sample_rate: Optional[int]
    # Counter-clockwise degrees (0, 90, 180, 270) a player turns the stored picture; width and height are after it.
    rotation: int = 0


@dataclass(frozen=True, eq=False)
class Clip:
    """One model input: T frames (T, size, size, 3) float32 in [0, 1] and T*spf mono samples."""

    index: int
    start_s: float
    frames: np.ndarray
    audio: np.ndarray
    n_valid_frames: int




def _warn_default(message: str) -> None:
    warnings.warn(message, MediaWarning, stacklevel=2)


def _open_media(path: PathLike) -> "av.container.InputContainer":
    """Open a media file for reading, turning every way it can fail into a one-line InputError."""
    name = _name(path)
    if not is_remote(name):  # a URL's problems come as the store's own one-line errors
        p = Path(path)
        if not p.exists():
            raise InputError(f"{name}: no such file")
        if p.is_dir():
            raise InputError(f"{name}: is a folder, not a video file")
        if p.stat().st_size == 0:
            raise InputError(f"{name}: empty file")
    try:
        return av.open(media_source(name), mode="r")
    except av.EOFError:
        raise InputError(f"{name}: no media data (the file ends before any frame)") from None
    except (av.FFmpegError, OSError) as error:
        raise InputError(f"{name}: not a readable media file ({_reason(error)})") from None


def _is_still_image(container: "av.container.InputContainer") -> bool:
    """Whether FFmpeg opened the file with a still-image demuxer (image2, png_pipe, jpeg_pipe, ...): one picture,
    not a video (an animated GIF has a demuxer of its own and stays a video)."""
    format_name = container.format.name or ""
    return format_name == "image2" or format_name.endswith("_pipe")


def _video_stream(container: "av.container.InputContainer", name: str) -> "av.VideoStream":
    if _is_still_image(container):
        raise InputError(f"{name}: a still image, not a video")
    if not container.streams.video:
        raise InputError(f"{name}: no video stream")
    return container.streams.video[0]


def _stream_rate(stream: "av.VideoStream") -> Optional[Fraction]:
    """The declared frame rate as a Fraction, or None when the file does not say."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate.numerator, rate.denominator)
    return None


def _declared_duration(container: "av.container.InputContainer", stream: "av.VideoStream") -> float:
    """Video duration in seconds from the stream, else the container, else 0.0."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _has_video_packets(container: "av.container.InputContainer", stream: "av.VideoStream") -> bool:
    try:
        for packet in container.demux(stream):
            if packet.size:
                return True
    except av.FFmpegError:
        return False
    return False


def _legacy_rotation(stream: "av.VideoStream") -> int:
    """Counter-clockwise degrees from an old-style 'rotate' tag (which counts clockwise), 0 without one."""
    for key, value in stream.metadata.items():
        if key.lower() == "rotate":
            try:
                return -int(round(float(value)))
            except ValueError:
                return 0
    return 0


def _quarter_turns(frame: "av.VideoFrame", legacy_degrees: int) -> int:
    """Counter-clockwise quarter turns (0-3) a player gives this frame: its display matrix, else the legacy tag."""
    try:
        degrees = frame.rotation
    except (AttributeError, ValueError):
        degrees = 0
    if not degrees:
        degrees = legacy_degrees
    # A display matrix can hold any angle; pictures only turn by whole quarters, so round to the nearest.
    return int(round(degrees / 90.0)) % 4


def _displayed(frame: "av.VideoFrame", legacy_degrees: int) -> np.ndarray:
    """A decoded frame as uint8 (H, W, 3) RGB, turned as a player shows it."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame, legacy_degrees)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _first_frame_turns(container: "av.container.InputContainer", stream: "av.VideoStream") -> Optional[int]:
    """Quarter turns of the first decodable frame, or None when no frame decodes."""
    try:
        for frame in container.decode(stream):
            return _quarter_turns(frame, _legacy_rotation(stream))
    except av.FFmpegError:
        return None
    return None


def probe_video(path: PathLike) -> VideoInfo:
    """Read a video file's size (as displayed), frame rate, duration, rotation and audio facts.

    Only the first frame is decoded, to read the display rotation it carries.
    """
    name = _name(path)
    with _open_media(path) as container:
        stream = _video_stream(container, name)
        rate = _stream_rate(stream)
        duration = _declared_duration(container, stream)
        frames = int(stream.frames or 0)
        fps = float(rate) if rate else (frames / duration if frames and duration else 0.0)
        if frames == 0 and duration > 0 and fps > 0:
            frames = int(round(duration * fps))
        if duration <= 0 and frames > 0 and fps > 0:
            duration = frames / fps
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_rate = int(audio.sample_rate) if audio is not None and audio.sample_rate else None
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if duration <= 0 and frames == 0:
            if not _has_video_packets(container, stream):
                raise InputError(f"{name}: zero-length video (no frames)")
            try:
                container.seek(0)
            except av.FFmpegError:
                pass  # then the rotation is read from a later frame, which carries the same matrix
        turns = _first_frame_turns(container, stream) or 0
        if turns % 2:
            width, height = height, width
        return VideoInfo(
            width=width,
            height=height,
            fps=fps,
            duration_s=duration,
            frame_count=frames,
            has_audio=audio is not None,
            audio_sample_rate=audio_rate,
            rotation=90 * turns,
        )


def _decoded_frames(container: "av.container.InputContainer", stream: "av.VideoStream",
                    name: str) -> Iterator["av.VideoFrame"]:
    """Decode one video stream in display order; a decoder failure becomes an InputError."""
    stream.thread_type = "AUTO"
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.FFmpegError as error:
        raise InputError(f"{name}: video decoding failed after {count} frames ({_reason(error)})") from None
    if count == 0:
        raise InputError(f"{name}: zero-length video (no decodable frames)")


def iter_timed_frames(path: PathLike, start_s: Optional[float] = None,
                      end_s: Optional[float] = None) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds from the first picture, uint8 (H, W, 3) RGB frame as displayed) within [start_s, end_s)."""
    for value, label in ((start_s, "start"), (end_s, "end")):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{label} must be a non-negative number of seconds, got {value}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise UsageError(f"end ({end_s} s) must be after start ({start_s} s)")
    name = _name(path)
    with _open_media(path) as container:
        stream = _video_stream(container, name)
        legacy = _legacy_rotation(stream)
        origin: Optional[Fraction] = None
        for t, _, frame in _timed_frames(container, stream, name):
            origin = t if origin is None else origin
            seconds = float(t - origin)
            if end_s is not None and seconds >= end_s:
                return
            if start_s is None or seconds >= start_s:
                yield seconds, _displayed(frame, legacy)


Item = TypeVar("Item")


def stepped_pairs(items: Iterable[Item], step: int = 1) -> Iterator[tuple[int, Item, Item]]:
    """(t, item t, item t + step) for t = 0, 1, ... while both exist, holding only step + 1 items."""
    if int(step) != step or step < 1:
        raise UsageError(f"step must be a positive whole number, got {step}")
    step = int(step)
    window: deque = deque(maxlen=step + 1)
    for index, item in enumerate(items):
        window.append(item)
        if len(window) == step + 1:
            yield index - step, window[0], item


def _timed_frames(container: "av.container.InputContainer", stream: "av.VideoStream",
                  name: str) -> Iterator[tuple[Fraction, Fraction, "av.VideoFrame"]]:
    """Yield (time, duration, frame) in display order with strictly increasing times in seconds.

    Decoders emit frames in display order, but some files (AVI with packed B-frames) label them
    with timestamps in decode order. The labels are right as a set, so the i-th frame out gets the
    smallest label among the next few frames. Jumps backwards left after that (a timestamp reset)
    are closed up so that time never stops.
    """
    rate = _stream_rate(stream)
    step = 1 / rate if rate else Fraction(1, 25)
    held: deque = deque()
    labels: list[Fraction] = []
    newest: Optional[Fraction] = None
    shift = Fraction(0)
    previous: Optional[Fraction] = None

    def label(frame: "av.VideoFrame") -> Fraction:
        nonlocal newest
        ticks = frame.pts if frame.pts is not None else frame.dts
        if ticks is None or frame.time_base is None:
            t = newest + step if newest is not None else Fraction(0)
        else:
            t = ticks * Fraction(frame.time_base.numerator, frame.time_base.denominator)
        newest = t if newest is None else max(newest, t)
        return t

    def release() -> tuple[Fraction, Fraction, "av.VideoFrame"]:
        nonlocal shift, previous
        frame = held.popleft()
        t = heapq.heappop(labels) + shift
        if previous is not None and t <= previous:
            shift += previous + step - t
            t = previous + step
        previous = t
        if frame.duration and frame.time_base is not None:
            length = frame.duration * Fraction(frame.time_base.numerator, frame.time_base.denominator)
        else:
            length = step
        return t, length, frame

    for frame in _decoded_frames(container, stream, name):
        held.append(frame)
        heapq.heappush(labels, label(frame))
        if len(held) > _REORDER_DEPTH:
            yield release()
    while held:
        yield release()


def _frames_at_rate(timed: Iterator[tuple[Fraction, Fraction, "av.VideoFrame"]],
                    fps: Fraction) -> Iterator["av.VideoFrame"]:
    """Resample to fps: output k (time k/fps from the first picture) is the frame on screen then."""
    k = 0
    origin: Optional[Fraction] = None
    shown = None
    shown_end = Fraction(0)
    for t, length, frame in timed:
        if origin is None:
            origin = t
        start = t - origin
        if shown is not None:
            while k / fps < start:
                yield shown
                k += 1
        shown, shown_end = frame, start + length
    while shown is not None and k / fps < shown_end:
        yield shown
        k += 1


def _square_resized(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of an (H, W, 3) uint8 image, resized to (size, size, 3) float32 in [0, 1]."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top:top + side, left:left + side]
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        square = cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interpolation)
    return square.astype(np.float32) / np.float32(255.0)


def iter_clips(path: PathLike, frames_per_clip: int = 16, fps: float = 25.0, size: int = 224,
               sample_rate: int = 48000, samples_per_frame: int = 1920,
               on_warning: Optional[WarningCallback] = None) -> Iterator[Clip]:
    """Stream a video as model clips: frames resampled to fps, square-cropped, with mono audio."""
    for value, label in ((frames_per_clip, "frames_per_clip"), (size, "size"),
                         (sample_rate, "sample_rate"), (samples_per_frame, "samples_per_frame")):
        if int(value) != value or value < 1:
            raise UsageError(f"{label} must be a positive whole number, got {value}")
    if not fps > 0 or not math.isfinite(fps):
        raise UsageError(f"fps must be a positive number, got {fps}")
    frames_per_clip, size, sample_rate = int(frames_per_clip), int(size), int(sample_rate)
    samples_per_frame = int(samples_per_frame)
    name = _name(path)
    warn = on_warning or _warn_default
    rate = Fraction(fps).limit_denominator(1001)
    clip_samples = frames_per_clip * samples_per_frame
    with _open_media(path) as container:
        stream = _video_stream(container, name)
        legacy = _legacy_rotation(stream)
        timed = _timed_frames(container, stream, name)
        first = next(timed)  # raises InputError when there is no decodable frame
        audio = _AudioQueue(path, float(first[0]), sample_rate, warn)
        try:
            frames = _frames_at_rate(_chain_one(first, timed), rate)
            cached_frame, cached_image = None, None
            index = 0
            while True:
                batch = np.empty((frames_per_clip, size, size, 3), dtype=np.float32)
                valid = 0
                for frame in frames:
                    if frame is not cached_frame:
                        cached_frame = frame
                        cached_image = _square_resized(_displayed(frame, legacy), size)
                    batch[valid] = cached_image
                    valid += 1
                    if valid == frames_per_clip:
                        break
                if valid == 0:
                    return
                if valid < frames_per_clip:
                    batch[valid:] = batch[valid - 1]
                yield Clip(index=index, start_s=float(index * frames_per_clip / rate), frames=batch,
                           audio=audio.take(clip_samples), n_valid_frames=valid)
                if valid < frames_per_clip:
                    return
                index += 1
        finally:
            audio.close()


def _chain_one(first, rest):
    yield first
    yield from rest


def clips_from_arrays(frames: np.ndarray, audio: Optional[np.ndarray] = None, frames_per_clip: int = 16,
                      fps: float = 25.0, size: int = 224, samples_per_frame: int = 1920) -> Iterator[Clip]:
    """Model clips from frames already at the model's rate, uint8 (T, H, W, 3), and mono float samples at
    its audio rate (None: silence), cut, cropped, resized and padded exactly as `iter_clips` does."""
    pictures = np.asarray(frames)
    if pictures.dtype != np.uint8 or pictures.ndim != 4 or pictures.shape[3] != 3 or not pictures.shape[0]:
        raise InputError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {pictures.dtype} {pictures.shape}")
    if min(pictures.shape[1:3]) < 1:
        raise InputError(f"frames must be at least 1x1 pixels, got {pictures.shape[2]}x{pictures.shape[1]}")
    sound = np.zeros(0, dtype=np.float32) if audio is None else np.asarray(audio)
    if sound.ndim != 1 or not (np.issubdtype(sound.dtype, np.floating) or sound.size == 0):
        raise InputError(f"audio must be 1-D float mono samples, got {sound.dtype} {sound.shape}")
    sound = np.clip(sound.astype(np.float32), -1.0, 1.0)
    clip_samples = frames_per_clip * samples_per_frame
    for index, first in enumerate(range(0, pictures.shape[0], frames_per_clip)):
        valid = min(frames_per_clip, pictures.shape[0] - first)
        batch = np.empty((frames_per_clip, size, size, 3), dtype=np.float32)
        for k in range(valid):
            batch[k] = _square_resized(pictures[first + k], size)
        batch[valid:] = batch[valid - 1]
        samples = np.zeros(clip_samples, dtype=np.float32)
        part = sound[index * clip_samples:(index + 1) * clip_samples]
        samples[:part.size] = part
        yield Clip(index=index, start_s=index * frames_per_clip / fps, frames=batch, audio=samples,
                   n_valid_frames=valid)
