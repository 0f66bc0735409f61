"""The Python API: load a checkpoint once, then call one function per task on in-memory data or paths.

    import perceiver_cli as pc
    model = pc.load_model("vision-conv")
    pc.classify(model, ["cat.jpg"], top_k=3)   # [[{"label", "index", "score"}, ...]]

Each function returns what one item of the matching command's --json output holds, computed by the same
task code, so the CLI and the API cannot drift apart. Every error a caller can cause (a bad argument, a model of
another task, an input that cannot be read, weights that cannot be found) is a ValueError whose message names
the function's arguments.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from perceiver_cli import load
from perceiver_cli.errors import PerceiverError
from perceiver_cli.tasks.fill_mask import FillMaskTask, MaskFiller
from perceiver_cli.tasks.classify import ClassifyTask, ImageClassifier
from perceiver_cli.tasks.flow import FlowTask
from perceiver_cli.tasks.flow_pairs import FlowPredictor
from perceiver_cli.tasks.autoencode import DEFAULT_CHUNK_SIZE, AutoencodeTask
from perceiver_cli.tasks.autoencode_clips import VideoAutoencoder

ImageLike = Union[str, os.PathLike, np.ndarray, Any]  # a path, a uint8 (H, W, 3) array or a PIL image

__all__ = ["load_model", "fill_mask", "classify", "flow", "autoencode", "features"]

# The command line's options as the API's arguments, in the messages the API raises.
API_ARGUMENTS = {"--device": "device", "--dtype": "dtype", "--numerics": "numerics", "--top-k": "top_k",
                 "--max-span": "max_span"}
_FLAG = re.compile("|".join(re.escape(flag) + r"\b" for flag in API_ARGUMENTS))


def _api(function):
    """`function` raising each of the user's errors as a ValueError in the API's words."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PerceiverError as exc:
            raise ValueError(_FLAG.sub(lambda match: API_ARGUMENTS[match.group(0)], str(exc))) from None

    return call


def _for_task(model, task: str) -> None:
    """Refuse a model whose checkpoint is of another task, as the command refuses it."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        load.check_task(spec, task, "model")


load_model = _api(load.load_model)


def runtime_of(model, batch_size: int):
    """Where and how `model` runs (the device and dtype of its parameters, as load_model placed them or a
    caller built them), with the task's batch size."""
    from perceiver_cli.runtime import Runtime, configure_threads

    parameter = next(model.parameters())
    return Runtime(parameter.device, parameter.dtype, batch_size, configure_threads())


@_api
def fill_mask(model, text: str, *, top_k: int = 5, max_span: int = 12) -> dict[str, Any]:
    """The best fillings of `text`'s [MASK] / [MASK:n] spans, as one `perceiver fill-mask --json` line holds
    them: {"input", "predictions": [{"text", "fills", "score", "log_prob"}, ...] best first, "masks": [{"length",
    "chosen", "length_scores"?}], "windows"?, "note"?}."""
    _for_task(model, FillMaskTask.name)
    runtime = runtime_of(model, FillMaskTask.cpu_batch_size)
    return MaskFiller(model, runtime, top_k, max_span).fill(text)


def _one_image(images: Any) -> bool:
    """Whether `images` is one image (a path, a (H, W, 3) array, a PIL image) rather than a sequence of them."""
    if isinstance(images, (str, os.PathLike)):
        return True
    if isinstance(images, np.ndarray):
        return images.ndim == 3
    return hasattr(images, "getbands")  # a PIL image


@_api
def classify(model, images: Union[ImageLike, Sequence[ImageLike]], *,
             top_k: int = 5) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The best classes of each image: one list of {"label", "index", "score"} per image, best first; for one
    image (not in a list), its one list. Images are paths, PIL images or uint8 (H, W, 3) arrays; one that cannot
    be read raises ValueError."""
    _for_task(model, ClassifyTask.name)
    runtime = runtime_of(model, ClassifyTask.cpu_batch_size)
    single = _one_image(images)
    records = ImageClassifier(model, runtime, top_k).classify([images] if single else images)
    predictions = [record["predictions"] for record in records]
    return predictions[0] if single else predictions


FrameLike = Union[str, os.PathLike, np.ndarray]  # a path, or a uint8 (H, W, 3) array


@_api
def flow(model, frame1: FrameLike, frame2: FrameLike) -> np.ndarray:
    """Optical flow from frame1 to frame2 as float32 (H, W, 2) pixels (u right, v down), for frames of any
    size, tiled as `perceiver flow` tiles them. Frames are paths or uint8 (H, W, 3) arrays of one size; a
    frame that cannot be read raises ValueError."""
    def frame(value: FrameLike, number: int):
        return (Path(value), str(value)) if isinstance(value, (str, os.PathLike)) else (value, f"frame {number}")

    _for_task(model, FlowTask.name)
    (first, name1), (second, name2) = frame(frame1, 1), frame(frame2, 2)
    runtime = runtime_of(model, FlowTask.cpu_batch_size)
    return FlowPredictor(model, runtime).flow(first, second, (name1, name2))


@_api
def autoencode(model, frames: np.ndarray, audio: Optional[np.ndarray] = None,
               features: Optional[str] = None) -> dict[str, np.ndarray]:
    """Reconstruct a video and its sound: frames uint8 (T, H, W, 3) at the model's 25 fps (centre-cropped and
    resized as the CLI does), mono float samples in [-1, 1] at its 48 kHz (None: silence) ->
    {"video": (T, size, size, 3) float32 in [0, 1], "audio": (T * 1920,) float32, "label_logits":
    (clips, 700) float32} (the arrays of `perceiver autoencode-video -o FILE.npz`); with `features` ("pooled" or
    "latents") also "features": each clip's, (clips, 512) or (clips, 784, 512) float32."""
    from perceiver_cli.choices import check_features

    _for_task(model, AutoencodeTask.name)
    check_features(features)
    runtime = runtime_of(model, AutoencodeTask.cpu_batch_size)
    return VideoAutoencoder(model, runtime, DEFAULT_CHUNK_SIZE).arrays(frames, audio, features=features)


@_api
def features(model, inputs: Sequence[Any], kind: str = "pooled") -> np.ndarray:
    """The latent features of each input, stacked: (B, d_latents) for kind "pooled" (the mean over latents),
    (B, num_latents, d_latents) for "latents" (the latent stack's output). A classifier takes images (paths or
    uint8 (H, W, 3) arrays, prepared as `classify` prepares them), the language model texts (their UTF-8
    bytes, no masks); an image that cannot be read raises ValueError."""
    from perceiver_cli.choices import check_features

    check_features(kind)
    task = model.spec.task
    if task == ClassifyTask.name:
        runtime = runtime_of(model, ClassifyTask.cpu_batch_size)
        return ImageClassifier(model, runtime, features=kind).latent_features(inputs)
    if task == FillMaskTask.name:
        from perceiver_cli.core.text import masked_ids, text_features

        ids = [masked_ids([str(text).encode("utf-8")], [])[0] for text in inputs]
        return np.stack(text_features(model, ids, kind, runtime_of(model, 1).device))
    raise ValueError(f"features: {model.spec.kind} models are not supported (classifiers and language only)")
