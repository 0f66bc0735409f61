"""Synthetic videos for tests, made with PyAV: moving gradients at 25 fps with a chosen sound track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE, SAMPLES_PER_FRAME, SIDE = 48000, 1920, 16


def write_video(path: Path, n_frames: int, width: int = SIDE, height: int = SIDE, sound: str | None = "tone",
                fmt: str | None = None) -> Path:
    """Moving gradients at 25 fps (H.264). sound: "tone" (AAC), "garbage" (AAC packets of random bytes,
    which no decoder accepts) or None. n_frames 0 in Matroska gives a video stream with no frame."""
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w", format=fmt) as container:
        video = container.add_stream("libx264", rate=25, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="mono") if sound else None
        tone_frames = max(n_frames, 10)  # a zero-length video still gets some sound
        for i in range(max(n_frames, tone_frames if sound == "tone" else 0)):
            if i < n_frames:
                rgb = np.stack([(xx * 13 + i * 20) % 256, (yy * 11 + i * 7) % 256, (xx + yy) * 5 % 256], -1)
                frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
                frame.pts = i
                for packet in video.encode(frame):
                    container.mux(packet)
            if sound == "garbage":
                packet = av.Packet(np.random.default_rng(i).integers(0, 256, 300, dtype=np.uint8).tobytes())
                packet.stream, packet.pts, packet.dts = audio, i * SAMPLES_PER_FRAME, i * SAMPLES_PER_FRAME
                packet.time_base = Fraction(1, RATE)
                container.mux(packet)
            elif sound == "tone":
                t = (np.arange(SAMPLES_PER_FRAME) + i * SAMPLES_PER_FRAME) / RATE
                chunk = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                   format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = RATE, i * SAMPLES_PER_FRAME
                for packet in audio.encode(chunk):
                    container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound == "tone":
            for packet in audio.encode(None):
                container.mux(packet)
    return path


def write_frames(path: Path, frames, fps: int = 25, crf: int = 0, pix_fmt: str = "yuv444p",
                 display_rotation: int | None = None, rotate_tag: str | None = None) -> Path:
    """RGB frames (an iterable of (H, W, 3) uint8 arrays) as an H.264 clip, with no sound; optionally a display
    rotation (the display matrix) or an old-style "rotate" tag. crf 0 with yuv444p is lossless."""
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt
        if display_rotation is not None:
            stream.set_display_rotation(display_rotation)
        if rotate_tag is not None:
            stream.metadata["rotate"] = rotate_tag
        for i, picture in enumerate([first, *frames]):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_sound_only(path: Path) -> Path:
    """An .mp4 holding AAC silence and no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=RATE, layout="mono")
        for i in range(10):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = RATE, i * 1024
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def iter_frames(path, start_s=None, end_s=None):
    """A video's uint8 (H, W, 3) frames as displayed, within [start_s, end_s) seconds."""
    from perceiver_cli.io.video import iter_timed_frames

    return (picture for _, picture in iter_timed_frames(path, start_s, end_s))


def is_kitti_flow_png(path) -> bool:
    """Whether a file is a PNG with 16-bit RGB pixels, the layout of KITTI flow files."""
    from perceiver_cli.io.flowfiles import png_layout

    with open(path, "rb") as handle:
        return png_layout(handle.read(26)) == (16, 2)  # colour type 2: RGB
