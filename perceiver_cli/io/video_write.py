"""Writing video files: H.264/VP9/MPEG-4/GIF with sound, atomically, to a path or a store URL.

- Output (`VideoWriter`): .mp4/.m4v/.mov/.mkv hold H.264 (libx264, yuv420p, CRF 18) with AAC sound;
  .webm holds VP9 with Opus sound; .avi holds MPEG-4 Part 2 (Xvid tag, quantiser 2) with 16-bit PCM
  sound; .gif holds each frame with its own 256-colour palette (median cut, no dithering), loops
  forever and has no sound (a writer for it refuses an audio_sample_rate). SUPPORTED_VIDEO_OUTPUTS
  lists the outputs with sound, SILENT_VIDEO_OUTPUTS the others. Sound goes in at
  audio_sample_rate, or at the nearest rate the encoder accepts when it refuses that one (Opus
  takes only 8-48 kHz steps, so 44.1 kHz becomes 48 kHz). Any other extension is refused with a
  UsageError. Except in .gif, odd widths or heights are padded to even by repeating the last column
  or row, so such a file is one pixel wider or taller than the frames given to it.
- A URL output is encoded into a local spool file and published whole when the writer closes
  (`io.store_write`); reading lives in `io.video`.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Optional, Union

import av
import numpy as np
from PIL import Image

from perceiver_cli.choices import SILENT_VIDEO_FORMATS, VIDEO_FORMATS
from perceiver_cli.errors import UsageError
from perceiver_cli.io.store import place
from perceiver_cli.io.store_write import atomic_write_path

PathLike = Union[str, "os.PathLike[str]"]

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


def _name(path: PathLike) -> str:
    return os.fspath(path)


def _reason(error: BaseException) -> str:
    """FFmpeg's reason for an error, on one line, without errno or file name."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


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
        self.path = place(path)
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


