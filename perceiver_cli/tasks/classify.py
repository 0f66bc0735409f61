"""The classify task: image paths -> decoded, cropped and normalised on a thread pool, batches ahead of the
model -> the ImageNet classifier -> `{"input", "predictions": [{"label", "index", "score"}]}` per image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from perceiver_cli.kinds import CLASSIFY, names_for_task
from perceiver_cli.choices import check_features
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.location import is_remote
from perceiver_cli.labels import IMAGENET_LABELS, label_names
from perceiver_cli.tasks.base import Item, ModelTask, Result, failure, problem_of, record_or_raise
from perceiver_cli.tasks.inputs import error_item, expand_arguments, rgb_array
from perceiver_cli.tasks.report import heading, row, visible

# Images prepared ahead of the model, in batches: enough to hide decoding, small enough for memory.
BATCHES_AHEAD = 2
MODELS = names_for_task(CLASSIFY)  # the --model choices, from the kinds' rows


def class_names(id2label: dict[int, str], num_labels: int) -> list[str]:
    """Names of the model's classes: config.json's id2label, else the shipped ImageNet-1k list for 1000 classes."""
    return label_names(id2label, num_labels, IMAGENET_LABELS)


def check_classifier(spec, source: str) -> None:
    """Refuse a checkpoint whose input size is not the one images are prepared at."""
    from perceiver_cli.io.imagenet import IMAGE_SIZE

    if spec.kind == "vision-learned" and spec.image_size != IMAGE_SIZE:
        raise UsageError(f"{source}: this vision-learned checkpoint has image_size {spec.image_size}, "
                         f"but classify feeds {IMAGE_SIZE}x{IMAGE_SIZE} images")


def predictions(scores: np.ndarray, indices: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """One image's best classes as records: [{"label", "index", "score"}], best first."""
    return [{"label": names[int(i)], "index": int(i), "score": float(s)} for s, i in zip(scores, indices)]


def check_top_k(top_k: int) -> None:
    """A usage error for a top-k below 1."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")


class ImageClassifier:
    """The classify predictor: images (paths, uint8 (H, W, 3) arrays, PIL images) in, records of their best
    classes out, for one classifier on one runtime; the classify task and the Python API both run it."""

    def __init__(self, model, runtime, top_k: int = 5, max_pixels: Optional[int] = None,
                 source: Optional[str] = None, features: Optional[str] = None, arrays: bool = False):
        check_top_k(top_k)
        check_classifier(model.spec, source or model.spec.kind)
        self.model, self.runtime, self.top_k, self.max_pixels = model, runtime, top_k, max_pixels
        self.features, self.arrays = features, arrays  # hand logits (and features) over in Result.arrays
        self.names = class_names(model.spec.id2label, model.spec.num_labels)

    def prepare(self, item: Item, out: np.ndarray) -> None:
        """Write the item's (3, 224, 224) model input into `out`; an InputError when it cannot be read."""
        from perceiver_cli.io.imagenet import preprocess_image
        from perceiver_cli.io.images import DEFAULT_MAX_PIXELS, read_image

        if item.error is not None:
            raise InputError(item.error)
        if isinstance(item.data, (str, Path)):  # a path, or a URL string
            rgb = read_image(item.data, DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels)
        else:  # an image in memory (the Python API): a uint8 (H, W, 3) array or a PIL image
            rgb = rgb_array(item.data)
        try:
            preprocess_image(rgb, out)
        except ValueError as exc:
            raise InputError(f"{item.input}: {exc}") from None

    def results(self, items: Iterable[Item], pool) -> Iterator[Result]:
        """One Result per item, in order: images decoded on `pool`, batches ahead of the model."""
        from perceiver_cli.core.vision import classify_pixels, prefetch_batches

        batches = prefetch_batches(items, self.prepare, self.runtime.batch_size, pool, ahead=BATCHES_AHEAD)
        for batch in batches:
            scores = indices = logits = features = None
            if batch.ok:
                scores, indices, logits, features = classify_pixels(
                    self.model, batch.pixels, self.top_k, self.runtime.device, self.runtime.dtype, self.features)
            ok_row = 0
            for position, item in enumerate(batch.items):
                if position in batch.errors:
                    yield failure(item, item.error or problem_of(batch.errors[position], item.input))
                    continue
                result = Result(item, {"input": item.input,
                                       "predictions": predictions(scores[ok_row], indices[ok_row], self.names)})
                if self.arrays:
                    result.arrays = {"logits": logits[ok_row]}
                    if features is not None:
                        result.arrays["features"] = features[ok_row]
                yield result
                ok_row += 1

    def classify(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        """One record per image, in order; an image that cannot be read raises ValueError."""
        return [record_or_raise(result) for result in self._results(images)]

    def latent_features(self, images: Sequence[Any]) -> np.ndarray:
        """The images' features (B, ...) stacked, as `self.features` names; an unreadable image raises ValueError."""
        self.arrays = True
        results = self._results(images)
        return np.stack([record_or_raise(result) and result.arrays["features"] for result in results])

    def _results(self, images: Sequence[Any]) -> list[Result]:
        items = [Item(i, str(image), data=image if is_remote(image) else Path(image))
                 if isinstance(image, (str, os.PathLike))
                 else Item(i, f"image {i}", data=image) for i, image in enumerate(images)]
        pool = self.runtime.decode_pool()
        try:
            return list(self.results(items, pool))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


class ClassifyTask(ModelTask):
    """Classify image files into the checkpoint's classes (ImageNet-1k for DeepMind's three)."""

    name = CLASSIFY
    progress_label = "classifying"
    default_model = MODELS[0]
    # On the CPU a bigger batch gains no speed (the latent matmuls are already large) but keeps every
    # image's activations alive at once; accelerators want batches.
    cpu_batch_size = 2
    accelerator_batch_size = 8

    def __init__(self, inputs: Sequence[str], *, source: Optional[str | Path] = None, top_k: int = 5,
                 max_pixels: Optional[int] = None, numerics: str = "deepmind", features: Optional[str] = None):
        check_top_k(top_k)
        check_features(features)
        if max_pixels is not None and max_pixels < 1:
            raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
        self.inputs = list(inputs)
        super().__init__(source, numerics)
        self.top_k = top_k
        self.max_pixels = max_pixels
        self.features = features
        self._pool = None

    def items(self) -> list[Item]:
        items = []
        expanded, names = expand_arguments(self.inputs)
        for index, found in enumerate(expanded):
            if isinstance(found, InputError):
                items.append(error_item(index, found, names))
            else:
                items.append(Item(index, str(found), data=found))
        return items

    def setup(self, runtime, model=None) -> None:
        self.model = self.model_for(runtime, model)
        self.classifier = ImageClassifier(self.model, runtime, self.top_k, self.max_pixels, str(self.source),
                                          self.features, self.arrays)
        self.names = self.classifier.names

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        if self._pool is None:
            self._pool = self.runtime.decode_pool()
        return self.classifier.results(items, self._pool)

    def render(self, record: dict[str, Any]) -> list[str]:
        return [heading(record)] + [row(f"{rank:>3}", f"{p['score']:.4f}", visible(p["label"]))
                                    for rank, p in enumerate(record["predictions"], start=1)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
