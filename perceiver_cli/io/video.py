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
- Output (`VideoWriter`): .mp4/.m4v/.mov/.mkv hold H.264 (libx264, yuv420p, CRF 18) with AAC sound;
  .webm holds VP9 with Opus sound; .avi holds MPEG-4 Part 2 (Xvid tag, quantiser 2) with 16-bit PCM
  sound; .gif holds each frame with its own 256-colour palette (median cut, no dithering), loops
  forever and has no sound (a writer for it refuses an audio_sample_rate). SUPPORTED_VIDEO_OUTPUTS
  lists the outputs with sound, SILENT_VIDEO_OUTPUTS the others. Sound goes in at
  audio_sample_rate, or at the nearest rate the encoder accepts when it refuses that one (Opus
  takes only 8-48 kHz steps, so 44.1 kHz becomes 48 kHz). Any other extension is refused with a
  UsageError. Except in .gif, odd widths or heights are padded to even by repeating the last column
  or row, so such a file is one pixel wider or taller than the frames given to it.
"""

from __future__ import annotations

import heapq
import math
import os
import warnings
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, TypeVar, Union

import av
import cv2
import numpy as np
from PIL import Image

from perceiver_cli.choices import SILENT_VIDEO_FORMATS, VIDEO_FORMATS
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.atomic import atomic_write_path

PathLike = Union[str, "os.PathLike[str]"]
WarningCallback = Callable[[str], None]

# Decoded frames held back to repair timestamps that arrive out of order (AVI with packed B-frames).
_REORDER_DEPTH = 4
_X264_OPTIONS = {"crf": "18", "preset": "medium"}
_VP9_OPTIONS = {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
# MPEG-4 Part 2 at a fixed quantiser of 2 (the finest): AVI's most widely played codec.
_MPEG4_OPTIONS = {"qscale": "2"}
# extension -> (container format, video encoder, audio encoder or None for no sound, container options)
_OUTPUT_KINDS = {
    ".mp4": ("mp4", "libx264", "aac", {"movflags": "+faststart"}),
    ".m4v": ("mp4", "libx264", "aac", {"movflags": "+faststart"}),
    ".mov": ("mov", "libx264", "aac", {"movflags": "+faststart"}),
    ".mkv": ("matroska", "libx264", "aac", {}),
    ".webm": ("webm", "libvpx-vp9", "libopus", {}),
    ".avi": ("avi", "mpeg4", "pcm_s16le", {}),
    ".gif": ("gif", "gif", None, {"loop": "0"}),
}
_VIDEO_OPTIONS = {"libx264": _X264_OPTIONS, "libvpx-vp9": _VP9_OPTIONS, "mpeg4": _MPEG4_OPTIONS, "gif": {}}
_PIXEL_FORMATS = {"libx264": "yuv420p", "libvpx-vp9": "yuv420p", "mpeg4": "yuv420p", "gif": "pal8"}
# Video outputs that carry sound, and those that hold pictures only; VideoWriter writes all of them.
SUPPORTED_VIDEO_OUTPUTS = tuple(f".{name}" for name in VIDEO_FORMATS)
SILENT_VIDEO_OUTPUTS = tuple(f".{name}" for name in SILENT_VIDEO_FORMATS)
ALL_VIDEO_OUTPUTS = SUPPORTED_VIDEO_OUTPUTS + SILENT_VIDEO_OUTPUTS


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


def _name(path: PathLike) -> str:
    return os.fspath(path)


def _reason(error: BaseException) -> str:
    """FFmpeg's reason for an error, on one line, without errno or file name."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _warn_default(message: str) -> None:
    warnings.warn(message, MediaWarning, stacklevel=2)


def _open_media(path: PathLike) -> "av.container.InputContainer":
    """Open a media file for reading, turning every way it can fail into a one-line InputError."""
    name = _name(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{name}: no such file")
    if p.is_dir():
        raise InputError(f"{name}: is a folder, not a video file")
    if p.stat().st_size == 0:
        raise InputError(f"{name}: empty file")
    try:
        return av.open(name, mode="r")
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


class _AudioQueue:
    """Mono float32 samples from the first audio track, aligned to the video clock, handed out in
    exact counts; silence once the track ends or fails."""

    def __init__(self, path: PathLike, origin_s: float, sample_rate: int, warn: WarningCallback) -> None:
        self._name = _name(path)
        self._path = path
        self._origin_s = origin_s
        self._rate = sample_rate
        self._warn = warn
        self._chunks: deque = deque()
        self._buffered = 0
        self._delivered = 0
        self._source: Optional[Iterator[np.ndarray]] = self._samples()

    def _samples(self) -> Iterator[np.ndarray]:
        try:
            container = av.open(self._name, mode="r")
        except (av.FFmpegError, OSError) as error:
            self._warn(f"{self._name}: audio could not be read ({_reason(error)}); using silence")
            return
        with container:
            if not container.streams.audio:
                self._warn(f"{self._name}: no audio track; using silence")
                return
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=self._rate)
            to_drop = 0
            first = True
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        if first:
                            first = False
                            start = out.time if out.time is not None else (frame.time or 0.0)
                            offset = int(round((start - self._origin_s) * self._rate))
                            if offset > 0:
                                yield np.zeros(offset, dtype=np.float32)
                            to_drop = max(0, -offset)
                        samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                        if to_drop:
                            cut = min(to_drop, samples.size)
                            samples, to_drop = samples[cut:], to_drop - cut
                        if samples.size:
                            yield samples
                for out in resampler.resample(None):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    if to_drop:
                        cut = min(to_drop, samples.size)
                        samples, to_drop = samples[cut:], to_drop - cut
                    if samples.size:
                        yield samples
            except (av.FFmpegError, OSError) as error:
                at = (self._delivered + self._buffered) / self._rate
                self._warn(f"{self._name}: audio track could not be decoded ({_reason(error)}); "
                           f"using silence from {at:.2f} s")

    def take(self, count: int) -> np.ndarray:
        """The next `count` samples, zero-padded past the end of the track."""
        while self._buffered < count and self._source is not None:
            chunk = next(self._source, None)
            if chunk is None:
                self._source = None
                break
            self._chunks.append(chunk)
            self._buffered += chunk.size
        out = np.zeros(count, dtype=np.float32)
        filled = 0
        while filled < count and self._chunks:
            chunk = self._chunks[0]
            n = min(count - filled, chunk.size)
            out[filled:filled + n] = chunk[:n]
            filled += n
            if n == chunk.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[n:]
        self._buffered -= filled
        self._delivered += count
        np.clip(out, -1.0, 1.0, out=out)
        return out

    def close(self) -> None:
        """Stop decoding and close the audio file."""
        if self._source is not None:
            self._source.close()
            self._source = None


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


def _paletted_frame(rgb: np.ndarray) -> "av.VideoFrame":
    """An RGB picture as a pal8 frame with its own 256-colour palette (median cut, no dithering)."""
    quantised = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colours = np.array(quantised.getpalette(), dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    # PyAV takes each palette entry as the bytes alpha, red, green, blue.
    palette[:, 0] = 255
    palette[: len(colours), 1:] = colours
    return av.VideoFrame.from_ndarray((np.asarray(quantised, dtype=np.uint8), palette), format="pal8")


class VideoWriter:
    """Write RGB frames and optional mono audio to a video file, atomically, as a context manager.

    The file appears at `path` only when the `with` block ends without an exception; until then the
    data goes to a temporary file in the same folder, removed on any exception or KeyboardInterrupt.
    """

    def __init__(self, path: PathLike, fps: float, width: int, height: int,
                 audio_sample_rate: Optional[int] = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _OUTPUT_KINDS:
            supported = ", ".join(ALL_VIDEO_OUTPUTS)
            shown = suffix or "no extension"
            raise UsageError(f"{_name(path)}: cannot write video as '{shown}' (use {supported})")
        if not fps > 0 or not math.isfinite(fps):
            raise UsageError(f"{_name(path)}: frame rate must be positive, got {fps}")
        if width < 1 or height < 1:
            raise UsageError(f"{_name(path)}: frame size must be positive, got {width}x{height}")
        if audio_sample_rate is not None and audio_sample_rate < 1:
            raise UsageError(f"{_name(path)}: audio sample rate must be positive, got {audio_sample_rate}")
        self.format, self._video_codec, self._audio_codec, self._container_options = _OUTPUT_KINDS[suffix]
        if audio_sample_rate is not None and self._audio_codec is None:
            raise UsageError(f"{_name(path)}: a '{suffix}' file holds no sound; write the sound to another file")
        self.fps = fps
        self.width, self.height = int(width), int(height)
        # yuv420p stores colour per 2x2 block, so the encoded size is rounded up to even
        even = _PIXEL_FORMATS[self._video_codec] == "yuv420p"
        self.encoded_width = self.width + self.width % 2 if even else self.width
        self.encoded_height = self.height + self.height % 2 if even else self.height
        self.audio_sample_rate = audio_sample_rate
        self._temporary = None
        self._container = None
        self._video = None
        self._audio = None
        self._resampler = None
        self._frames_written = 0
        self._samples_written = 0

    def __enter__(self) -> "VideoWriter":
        self._temporary = atomic_write_path(self.path)
        temporary_path = self._temporary.__enter__()
        try:
            self._open(temporary_path)
        except BaseException as error:
            self._abandon(type(error), error, error.__traceback__)
            raise
        return self

    def _open(self, temporary_path: PathLike) -> None:
        container = av.open(os.fspath(temporary_path), mode="w", format=self.format,
                            options=self._container_options)
        self._container = container
        rate = Fraction(self.fps).limit_denominator(1001)
        options = dict(_VIDEO_OPTIONS[self._video_codec])
        video = container.add_stream(self._video_codec, rate=rate, options=options)
        video.width, video.height = self.encoded_width, self.encoded_height
        video.pix_fmt = _PIXEL_FORMATS[self._video_codec]
        if self._video_codec == "mpeg4":
            # Players look for the Xvid tag in AVI; FFmpeg's default FMP4 is less widely known.
            video.codec_context.codec_tag = "XVID"
        video.codec_context.time_base = 1 / rate
        self._video = video
        self._frame_time_base = 1 / rate
        if self.audio_sample_rate is not None:
            codec = av.Codec(self._audio_codec, "w")
            rates = codec.audio_rates
            encoder_rate = self.audio_sample_rate
            if rates and encoder_rate not in rates:
                encoder_rate = min(rates, key=lambda r: (abs(r - self.audio_sample_rate), -r))
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=encoder_rate)
            self._audio = container.add_stream(self._audio_codec, rate=encoder_rate, layout="mono")

    def write_frame(self, frame: np.ndarray) -> None:
        """Append one uint8 (height, width, 3) RGB frame."""
        if self._video is None:
            raise RuntimeError("VideoWriter.write_frame called outside its 'with' block")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise ValueError(f"expected a uint8 ({self.height}, {self.width}, 3) frame, "
                             f"got {frame.dtype} {frame.shape}")
        pad_rows, pad_cols = self.encoded_height - self.height, self.encoded_width - self.width
        if pad_rows or pad_cols:
            frame = np.pad(frame, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
        if self._video_codec == "gif":
            picture = _paletted_frame(frame)
        else:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts = self._frames_written
        picture.time_base = self._frame_time_base
        self._frames_written += 1
        for packet in self._video.encode(picture):
            self._container.mux(packet)

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float samples in [-1, 1] at the audio_sample_rate given to the constructor."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write_audio called outside its 'with' block")
        if self._audio is None:
            raise ValueError("this VideoWriter was made without audio_sample_rate, so it has no audio track")
        samples = np.asarray(samples)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"expected 1-D float mono samples, got {samples.dtype} {samples.shape}")
        if samples.size == 0:
            return
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None, :],
                                           format="flt", layout="mono")
        chunk.sample_rate = self.audio_sample_rate
        chunk.pts = self._samples_written
        chunk.time_base = Fraction(1, self.audio_sample_rate)
        self._samples_written += samples.size
        self._encode_audio(self._resampler.resample(chunk) if self._resampler else [chunk])

    def _encode_audio(self, chunks) -> None:
        for chunk in chunks:
            for packet in self._audio.encode(chunk):
                self._container.mux(packet)

    def _finish(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            if self._resampler is not None:
                self._encode_audio(self._resampler.resample(None))
            self._encode_audio([None])
        container, self._container = self._container, None
        container.close()

    def _abandon(self, exc_type, exc, tb) -> bool:
        """Close what is open, ignoring its errors, and let the temporary file be removed."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # the file is being thrown away; its own error says nothing new
                pass
        temporary, self._temporary = self._temporary, None
        self._video = self._audio = None
        return bool(temporary.__exit__(exc_type, exc, tb)) if temporary is not None else False

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            return self._abandon(exc_type, exc, tb)
        try:
            self._finish()
        except BaseException as error:
            if not self._abandon(type(error), error, error.__traceback__):
                raise
            return False
        temporary, self._temporary = self._temporary, None
        self._video = self._audio = None
        return bool(temporary.__exit__(None, None, None))


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
