"""The sound of a video for its clips: the first audio track, resampled to mono and aligned to the video
clock, handed out in exact counts (see `io.video.iter_clips`); and what FFmpeg opens for a path or a URL."""

from __future__ import annotations

from collections import deque
from typing import IO, Callable, Iterator, Optional

import av
import numpy as np

from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store import open_input
from perceiver_cli.io.video_write import PathLike, _name, _reason

WarningCallback = Callable[[str], None]


def media_source(name: str) -> str | IO[bytes]:
    """What av.open reads: a local file by name; a URL as a seekable file of range reads (never downloaded
    whole)."""
    return open_input(name) if is_remote(name) else name


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
            container = av.open(media_source(self._name), mode="r")
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

            def kept(out) -> np.ndarray:
                """A resampled frame's samples, less those before the first picture still to drop."""
                nonlocal to_drop
                samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                cut = min(to_drop, samples.size)
                to_drop -= cut
                return samples[cut:]

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
                        samples = kept(out)
                        if samples.size:
                            yield samples
                for samples in map(kept, resampler.resample(None)):
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
