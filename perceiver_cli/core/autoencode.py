"""Multimodal autoencoding of one clip at a time: encode once, decode every output point in bounded chunks.

Torch only: frames and samples arrive as tensors, results leave as CPU float32 tensors. What this adds
to the model (core.multimodal.MultimodalAutoencoder):

- the clip geometry a checkpoint implies (frames per clip, frame side, audio samples per frame and per
  patch; 25 fps, and an audio rate of 25 x samples per frame, 48 kHz for DeepMind's checkpoint);
- a clip whose tail is padding (the last clip of a video) decodes only its real frames and their sound;
- reconstructions are clipped to the input ranges ([0, 1] pixels, [-1, 1] samples) before they are
  scored or written;
- PSNR against the preprocessed input, per clip and pooled over a whole video (pooled squared error, so
  the whole-input figure is not a mean of per-clip decibels); label probabilities are a softmax per
  clip and their plain mean over clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from perceiver_cli.choices import DEFAULT_CHUNK_SIZE
from perceiver_cli.core.spec import PerceiverSpec
from perceiver_cli.errors import UsageError

# The multimodal checkpoint was trained on Kinetics clips at 25 frames a second.
MODEL_FPS = 25
# Peak-to-peak ranges used for PSNR: pixels in [0, 1], audio samples in [-1, 1].
VIDEO_DATA_RANGE = 1.0
AUDIO_DATA_RANGE = 2.0


@dataclass(frozen=True)
class ClipGeometry:
    """How a multimodal checkpoint cuts a video into clips."""

    frames_per_clip: int
    image_size: int  # frames are image_size x image_size pixels
    samples_per_frame: int
    samples_per_patch: int
    fps: int = MODEL_FPS

    @property
    def sample_rate(self) -> int:
        """Audio samples a second that keep sound and pictures aligned (48000 for the real checkpoint)."""
        return self.fps * self.samples_per_frame

    @property
    def samples_per_clip(self) -> int:
        """Audio samples in one full clip."""
        return self.frames_per_clip * self.samples_per_frame


def clip_geometry(spec: PerceiverSpec) -> ClipGeometry:
    """The clip geometry of a multimodal checkpoint's config; UsageError for one this pipeline cannot run."""
    shape = tuple(spec.output_shape)
    if len(shape) != 4 or shape[1] != spec.num_frames or shape[2] != shape[3]:
        raise UsageError(f"config.json output_shape {list(shape)} is not [1, num_frames, size, size] "
                         f"with num_frames {spec.num_frames}")
    size = int(shape[2])
    if size % 4:
        raise UsageError(f"config.json frame size {size} is not a multiple of 4 (the model's patch size)")
    clip_samples = spec.num_frames * spec.audio_samples_per_frame
    if clip_samples % spec.samples_per_patch:
        raise UsageError(f"config.json: {clip_samples} audio samples a clip do not split into patches of "
                         f"{spec.samples_per_patch}")
    return ClipGeometry(frames_per_clip=int(spec.num_frames), image_size=size,
                        samples_per_frame=int(spec.audio_samples_per_frame),
                        samples_per_patch=int(spec.samples_per_patch))


def psnr_from_error(squared_error: float, count: int, data_range: float) -> float:
    """PSNR in dB from a sum of squared errors over `count` values; inf when the error is zero."""
    if count <= 0:
        return float("nan")
    mse = squared_error / count
    return float("inf") if mse == 0.0 else 10.0 * math.log10(data_range * data_range / mse)


def _squared_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).sum())


@dataclass
class ClipResult:
    """One clip's outputs, trimmed to its real frames and clipped to valid ranges, with its scores."""

    video: torch.Tensor  # (T_valid, H, W, 3) float32 in [0, 1]
    audio: torch.Tensor  # (T_valid * samples_per_frame,) float32 in [-1, 1]
    label_logits: torch.Tensor  # (num_labels,) float32
    probabilities: torch.Tensor  # (num_labels,) float32, softmax of label_logits
    video_squared_error: float
    audio_squared_error: float
    latents: Optional[torch.Tensor] = None  # (L, D) float32, the latent stack's output the decoder read

    @property
    def psnr_video(self) -> float:
        """PSNR (dB) of the reconstructed frames against the preprocessed input frames."""
        return psnr_from_error(self.video_squared_error, self.video.numel(), VIDEO_DATA_RANGE)

    @property
    def psnr_audio(self) -> float:
        """PSNR (dB) of the reconstructed sound against the preprocessed input sound."""
        return psnr_from_error(self.audio_squared_error, self.audio.numel(), AUDIO_DATA_RANGE)


def decode_clip(model: torch.nn.Module, z: torch.Tensor, n_valid_frames: Optional[int] = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, torch.Tensor]:
    """Raw outputs of the first n_valid_frames frames from latents z (B, L, D), at most chunk_size queries a pass:
    video (B, t, H, W, 3), audio (B, t * samples_per_frame), label (B, num_labels)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    geometry = clip_geometry(model.spec)
    t = geometry.frames_per_clip if n_valid_frames is None else int(n_valid_frames)
    if not 1 <= t <= geometry.frames_per_clip:
        raise ValueError(f"n_valid_frames must be in 1..{geometry.frames_per_clip}, got {t}")
    size = geometry.image_size
    n_samples = t * geometry.samples_per_frame
    wanted = {"image": t * size * size, "audio": -(-n_samples // geometry.samples_per_patch), "label": 1}
    b = z.shape[0]
    out = {}
    for modality, n in wanted.items():
        out[modality] = model.decode_chunked(z, modality, n, chunk_size)
    return {"video": out["image"].reshape(b, t, size, size, 3),
            "audio": out["audio"].reshape(b, -1)[:, :n_samples], "label": out["label"][:, 0, :]}


def autoencode_clip(model: torch.nn.Module, frames: torch.Tensor, audio: torch.Tensor,
                    n_valid_frames: Optional[int] = None, chunk_size: int = DEFAULT_CHUNK_SIZE, *,
                    device: torch.device, dtype: torch.dtype = torch.float32) -> ClipResult:
    """Reconstruct one clip: frames (T, H, W, 3) in [0, 1] and mono audio (S,) in [-1, 1], the clip's full
    (padded) length, with `model` on `device` in `dtype`; the encoder runs once, outputs cover only the
    first n_valid_frames frames."""
    geometry = clip_geometry(model.spec)
    t, size = geometry.frames_per_clip, geometry.image_size
    if tuple(frames.shape) != (t, size, size, 3):
        raise ValueError(f"frames must be ({t}, {size}, {size}, 3), got {tuple(frames.shape)}")
    if tuple(audio.shape) != (geometry.samples_per_clip,):
        raise ValueError(f"audio must be ({geometry.samples_per_clip},), got {tuple(audio.shape)}")
    valid = t if n_valid_frames is None else int(n_valid_frames)
    with torch.inference_mode():
        images = frames.to(device=device, dtype=dtype).permute(0, 3, 1, 2)[None]
        sound = audio.to(device=device, dtype=dtype)[None]
        z = model.encode(images, sound)
        raw = decode_clip(model, z, valid, chunk_size)
        video = raw["video"][0].float().clamp_(0.0, 1.0).cpu()
        recon_audio = raw["audio"][0].float().clamp_(-1.0, 1.0).cpu()
        logits = raw["label"][0].float().cpu()
    n_samples = valid * geometry.samples_per_frame
    return ClipResult(
        video=video, audio=recon_audio, label_logits=logits, probabilities=torch.softmax(logits, dim=0),
        video_squared_error=_squared_error(video, frames[:valid]),
        audio_squared_error=_squared_error(recon_audio, audio[:n_samples]), latents=z[0].float().cpu(),
    )


@dataclass
class RunningSummary:
    """Whole-input scores gathered clip by clip: mean label probabilities and pooled PSNR."""

    clips: int = 0
    probability_sum: Optional[torch.Tensor] = None
    video_squared_error: float = 0.0
    video_values: int = 0
    audio_squared_error: float = 0.0
    audio_values: int = 0

    def add(self, clip: ClipResult) -> None:
        """Fold one clip's results into the whole-input scores."""
        self.clips += 1
        p = clip.probabilities.double()
        self.probability_sum = p.clone() if self.probability_sum is None else self.probability_sum + p
        self.video_squared_error += clip.video_squared_error
        self.video_values += clip.video.numel()
        self.audio_squared_error += clip.audio_squared_error
        self.audio_values += clip.audio.numel()

    @property
    def probabilities(self) -> torch.Tensor:
        """(num_labels,) mean of the clips' label probabilities."""
        if self.probability_sum is None:
            raise ValueError("no clips were added")
        return (self.probability_sum / self.clips).float()

    @property
    def psnr_video(self) -> float:
        """PSNR (dB) of all reconstructed frames together."""
        return psnr_from_error(self.video_squared_error, self.video_values, VIDEO_DATA_RANGE)

    @property
    def psnr_audio(self) -> float:
        """PSNR (dB) of all reconstructed sound together."""
        return psnr_from_error(self.audio_squared_error, self.audio_values, AUDIO_DATA_RANGE)


def top_k(probabilities: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The k most probable (index, probability) pairs of a (num_labels,) vector, best first."""
    k = max(0, min(int(k), probabilities.numel()))
    values, indices = torch.topk(probabilities, k)
    return [(int(i), float(v)) for i, v in zip(indices.tolist(), values.tolist())]
