"""The Python API: load a checkpoint once, then call one function per task on in-memory data or paths.

    import perceiver_cli as pc
    model = pc.load_model("vision-conv")
    pc.classify(model, ["cat.jpg"], top_k=3)   # [[{"label", "index", "score"}, ...]]

Each function returns what one item of the matching command's --json output holds, computed by the same
task code, so the CLI and the API cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from perceiver_cli.load import load_model
from perceiver_cli.tasks.fill_mask import FillMaskTask, MaskFiller
from perceiver_cli.tasks.classify import ClassifyTask, ImageClassifier
from perceiver_cli.tasks.flow import FlowTask
from perceiver_cli.tasks.flow_pairs import FlowPredictor
from perceiver_cli.tasks.autoencode import DEFAULT_CHUNK_SIZE, AutoencodeTask
from perceiver_cli.tasks.autoencode_clips import VideoAutoencoder

ImageLike = Union[str, os.PathLike, np.ndarray, Any]  # a path, a uint8 (H, W, 3) array or a PIL image

__all__ = ["load_model", "fill_mask", "classify", "flow", "autoencode", "features"]


def runtime_of(model, batch_size: int):
    """Where and how `model` runs (the device and dtype of its parameters, as load_model placed them or a
    caller built them), with the task's batch size."""
    from perceiver_cli.runtime import Runtime, configure_threads

    parameter = next(model.parameters())
    return Runtime(parameter.device, parameter.dtype, batch_size, configure_threads())


def fill_mask(model, text: str, *, top_k: int = 5, max_span: int = 12) -> list[dict[str, Any]]:
    """The best fillings of `text`'s [MASK] / [MASK:n] spans: [{"text", "fills", "score", "log_prob"}], best
    first (the `predictions` of one `perceiver fill-mask --json` line)."""
    runtime = runtime_of(model, FillMaskTask.cpu_batch_size)
    return MaskFiller(model, runtime, top_k, max_span).fill(text)["predictions"]


def classify(model, images: Sequence[ImageLike], *, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """The best classes of each image: one list of {"label", "index", "score"} per image, best first.
    Images are paths, PIL images or uint8 (H, W, 3) arrays; one that cannot be read raises ValueError."""
    runtime = runtime_of(model, ClassifyTask.cpu_batch_size)
    return [record["predictions"] for record in ImageClassifier(model, runtime, top_k).classify(images)]


FrameLike = Union[str, os.PathLike, np.ndarray]  # a path, or a uint8 (H, W, 3) array


def flow(model, frame1: FrameLike, frame2: FrameLike) -> np.ndarray:
    """Optical flow from frame1 to frame2 as float32 (H, W, 2) pixels (u right, v down), for frames of any
    size, tiled as `perceiver flow` tiles them. Frames are paths or uint8 (H, W, 3) arrays of one size; a
    frame that cannot be read raises ValueError."""
    def frame(value: FrameLike, number: int):
        return (Path(value), str(value)) if isinstance(value, (str, os.PathLike)) else (value, f"frame {number}")

    (first, name1), (second, name2) = frame(frame1, 1), frame(frame2, 2)
    runtime = runtime_of(model, FlowTask.cpu_batch_size)
    return FlowPredictor(model, runtime).flow(first, second, (name1, name2))


def autoencode(model, frames: np.ndarray, audio: Optional[np.ndarray] = None,
               features: Optional[str] = None) -> dict[str, np.ndarray]:
    """Reconstruct a video and its sound: frames uint8 (T, H, W, 3) at the model's 25 fps (centre-cropped and
    resized as the CLI does), mono float samples in [-1, 1] at its 48 kHz (None: silence) ->
    {"video": (T, size, size, 3) float32 in [0, 1], "audio": (T * 1920,) float32, "label_logits":
    (clips, 700) float32} (the arrays of `perceiver autoencode-video -o FILE.npz`); with `features` ("pooled" or
    "latents") also "features": each clip's, (clips, 512) or (clips, 784, 512) float32."""
    from perceiver_cli.choices import check_features

    check_features(features)
    runtime = runtime_of(model, AutoencodeTask.cpu_batch_size)
    return VideoAutoencoder(model, runtime, DEFAULT_CHUNK_SIZE).arrays(frames, audio, features=features)


def features(model, inputs: Sequence[Any], kind: str = "pooled") -> np.ndarray:
    """The latent features of each input, stacked: (B, d_latents) for kind "pooled" (the mean over latents),
    (B, num_latents, d_latents) for "latents" (the latent stack's output). A classifier takes images (paths or
    uint8 (H, W, 3) arrays, prepared as `classify` prepares them), the language model texts (their UTF-8
    bytes, no masks); an image that cannot be read raises ValueError."""
    from perceiver_cli.choices import check_features

    check_features(kind)
    task = model.spec.task
    if task == "classify":
        runtime = runtime_of(model, ClassifyTask.cpu_batch_size)
        return ImageClassifier(model, runtime, features=kind).latent_features(inputs)
    if task == "fill-mask":
        from perceiver_cli.core.text import masked_ids, text_features

        ids = [masked_ids([str(text).encode("utf-8")], [])[0] for text in inputs]
        return np.stack(text_features(model, ids, kind, runtime_of(model, 1).device))
    raise ValueError(f"features: {model.spec.kind} models are not supported (classifiers and language only)")
