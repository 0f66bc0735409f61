"""Class names of a checkpoint: its config's id2label when it names the classes, else a list shipped with us."""

from __future__ import annotations

import re
from importlib.resources import files

IMAGENET_LABELS = "imagenet1k.txt"  # DeepMind's ImageNet colab order
KINETICS_LABELS = "kinetics700.txt"  # DeepMind's video autoencoding colab order
_GENERIC = re.compile(r"LABEL_\d+")


def shipped_labels(filename: str) -> list[str]:
    """One of the label lists in perceiver_cli/data, one name per line."""
    text = files("perceiver_cli").joinpath("data", filename).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def label_names(id2label: dict[int, str], num_labels: int, shipped: str) -> list[str]:
    """Names for classes 0..num_labels-1: config names unless missing or generic (LABEL_i), then the shipped
    list when it has exactly num_labels names, else 'label i'."""
    names = [id2label.get(i) for i in range(num_labels)] if id2label else []
    if names and not all(name is None or _GENERIC.fullmatch(name) for name in names):
        return [name if name is not None else f"label {i}" for i, name in enumerate(names)]
    fallback = shipped_labels(shipped)
    if len(fallback) == num_labels:
        return fallback
    return [f"label {i}" for i in range(num_labels)]
