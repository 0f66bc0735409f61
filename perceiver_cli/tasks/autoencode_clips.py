"""The autoencode-video predictor: a video (a file, or frames and samples in memory) cut into clips with
the checkpoint's geometry, each clip through the multimodal checkpoint (core.autoencode.autoencode_clip) ->
its reconstruction, label scores and record. The autoencode-video task and the Python API both run clips
through `VideoAutoencoder`; the writers here put a clip's pictures and sound into the outputs."""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.io.store import place
from perceiver_cli.labels import KINETICS_LABELS, label_names as shared_label_names
from perceiver_cli.tasks.base import Item, problem_of
from perceiver_cli.tasks.inputs import finite


def label_names(spec) -> list[str]:
    """Names of the checkpoint's labels: config id2label when it names them, else the shipped Kinetics-700 list."""
    return shared_label_names(spec.id2label, int(spec.num_labels), KINETICS_LABELS)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float in [0, 1] -> uint8, rounded."""
    return np.rint(np.asarray(frames) * 255.0).astype(np.uint8)


def clip_visuals(clip, reconstruction: np.ndarray, sound: np.ndarray, frames: int = 3) -> dict[str, np.ndarray]:
    """A few of a clip's frames and its sound, input beside reconstruction (uint8 frames, mono samples): what
    a report draws a video's pictures from."""
    picked = np.linspace(0, max(clip.n_valid_frames - 1, 0), frames).round().astype(int)
    return {"frames": to_uint8(clip.frames[picked]),
            "reconstruction": to_uint8(np.clip(reconstruction[picked], 0.0, 1.0)),
            "audio": np.asarray(clip.audio).reshape(-1), "audio_out": np.asarray(sound).reshape(-1)}


def _predictions(pairs: list[tuple[int, float]], names: list[str]) -> list[dict[str, Any]]:
    return [{"label": names[i], "index": i, "score": s} for i, s in pairs]


def video_record(video: Item, clip_records: list[dict[str, Any]], summary, names: list[str],
                 top_k: int) -> dict[str, Any]:
    """A video's record: its outputs, its clips' records, and the whole video's predictions and PSNRs."""
    from perceiver_cli.core import autoencode as core

    return {"input": video.input, "outputs": [str(place(output)) for output in video.outputs],
            "clips": clip_records,
            "predictions": _predictions(core.top_k(summary.probabilities, top_k), names),
            "psnr_video": finite(summary.psnr_video), "psnr_audio": finite(summary.psnr_audio)}


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


def video_writers(stack: ExitStack, paths: list[Path], g, side_by_side: bool) -> list:
    """Video writers for `paths` in geometry `g`, entered on `stack` (leaving it finishes them; an error
    removes them)."""
    from perceiver_cli.io.video import VideoWriter

    width = 2 * g.image_size if side_by_side else g.image_size
    return [stack.enter_context(VideoWriter(path, fps=g.fps, width=width, height=g.image_size,
                                            audio_sample_rate=g.sample_rate)) for path in paths]


def write_clip(writers: list, pictures: np.ndarray, sound: np.ndarray) -> None:
    """One clip's frames and sound onto every video writer."""
    for writer in writers:
        for picture in pictures:
            writer.write_frame(picture)
        writer.write_audio(sound)


def write_kept(wav_paths: list[Path], npz_paths: list[Path], kept: Optional[ClipArrays], sample_rate: int) -> None:
    """The whole video's sound (.wav) and arrays (.npz), from every clip kept."""
    from perceiver_cli.io.audio import write_npz, write_wav

    for path in wav_paths:
        write_wav(path, kept.sound(), sample_rate)
    for path in npz_paths:
        write_npz(path, **kept.arrays())


def read_guarded(clips: Iterator, name: str) -> Iterator:
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


class VideoAutoencoder:
    """Clips in, reconstructions and records out, for one multimodal model on one runtime."""

    def __init__(self, model, runtime, chunk_size: int, top_k: int = 5, side_by_side: bool = False):
        from perceiver_cli.core.autoencode import clip_geometry

        self.model, self.runtime = model, runtime
        self.chunk_size, self.top_k, self.side_by_side = chunk_size, top_k, side_by_side
        self.geometry = clip_geometry(model.spec)
        self.names = label_names(model.spec)

    def clips(self, source, warnings: list[str]) -> tuple[Iterator, Optional[int]]:
        """The clips of `source` (a video file, or (frames, audio) at the model's rates) and how many there will
        be (None when the file does not say)."""
        from perceiver_cli.io.video import clips_from_arrays, iter_clips, probe_video

        g = self.geometry
        if isinstance(source, (Path, str)):  # a path, or a URL
            info = probe_video(source)  # a file that is no video fails here, before any output is opened
            frames = math.ceil(info.duration_s * g.fps) if info.duration_s > 0 else 0
            clips = iter_clips(source, frames_per_clip=g.frames_per_clip, fps=g.fps, size=g.image_size,
                               sample_rate=g.sample_rate, samples_per_frame=g.samples_per_frame,
                               on_warning=warnings.append)
            return clips, (math.ceil(frames / g.frames_per_clip) if frames else None)
        frames, audio = source
        clips = clips_from_arrays(frames, audio, frames_per_clip=g.frames_per_clip, fps=g.fps, size=g.image_size,
                                  samples_per_frame=g.samples_per_frame)
        return clips, math.ceil(len(frames) / g.frames_per_clip)

    def encode(self, clip):
        """One clip through the model: core.autoencode's ClipResult (tensors)."""
        import torch

        from perceiver_cli.core import autoencode as core

        return core.autoencode_clip(self.model, torch.from_numpy(clip.frames), torch.from_numpy(clip.audio),
                                    clip.n_valid_frames, self.chunk_size, device=self.runtime.device,
                                    dtype=self.runtime.dtype)

    def pictures(self, clip, reconstruction: np.ndarray) -> np.ndarray:
        """A clip's frames as video outputs show them: the reconstruction, beside the input with side_by_side."""
        pictures = to_uint8(reconstruction)
        if self.side_by_side:
            pictures = np.concatenate([to_uint8(clip.frames[:clip.n_valid_frames]), pictures], axis=2)
        return pictures

    def clip_record(self, clip, result) -> dict[str, Any]:
        """One clip's part of a video's record: where it starts, its predictions and its PSNRs."""
        from perceiver_cli.core import autoencode as core

        return {"start_s": round(float(clip.start_s), 6),
                "predictions": _predictions(core.top_k(result.probabilities, self.top_k), self.names),
                "psnr_video": finite(result.psnr_video), "psnr_audio": finite(result.psnr_audio)}

    def arrays(self, frames: np.ndarray, audio: Optional[np.ndarray], name: str = "frames",
               features: Optional[str] = None) -> dict[str, np.ndarray]:
        """The reconstruction of a video in memory, as an .npz output holds it, and with `features` each clip's
        latent features ("features": (clips, ...)); a video that cannot be cut into clips raises ValueError."""
        from perceiver_cli.core.trunk import latent_features

        gathered, kept = ClipArrays(), []
        try:
            clips, _ = self.clips((frames, audio), [])
            for clip in read_guarded(clips, name):
                result = self.encode(clip)
                gathered.add(result.video.numpy(), result.audio.numpy(), result.label_logits.numpy())
                if features:
                    kept.append(latent_features(result.latents[None], features)[0])
        except InputError as error:
            raise ValueError(f"{name}: {problem_of(error, name)}") from None
        return {**gathered.arrays(), **({"features": np.stack(kept)} if features else {})}
