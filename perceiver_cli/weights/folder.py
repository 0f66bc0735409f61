"""A checkpoint folder on disk: config.json and one weights file (model.safetensors or pytorch_model.bin).

Weights are never read through code-running pickle: safetensors, or torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional

from perceiver_cli.io.inputs import require_regular_file
from perceiver_cli.errors import WeightsError
from perceiver_cli.weights.registry import WEIGHT_FILES

# Entries of a state_dict that are running statistics, not learned parameters (BatchNorm's).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def weights_in(directory: Path) -> Optional[Path]:
    """The weights file of a checkpoint folder (model.safetensors preferred), or None."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def is_complete(directory: Path) -> bool:
    """Whether a folder holds config.json and a weights file."""
    return (directory / "config.json").is_file() and weights_in(directory) is not None


def read_config(directory: Path) -> dict[str, Any]:
    """Parse directory/config.json with one-line errors."""
    path = directory / "config.json"
    require_regular_file(path, error=WeightsError)
    if not path.is_file():
        raise WeightsError(f"{directory}: no config.json in this weights folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: not a JSON object")
    return config


def _weights_path(directory: Path) -> Path:
    path = weights_in(directory)
    if path is None:
        raise WeightsError(f"{directory}: no weights file (expected {' or '.join(WEIGHT_FILES)})")
    return path


def _unreadable(path: Path, exc: Exception) -> WeightsError:
    text = str(exc)
    msg = text.splitlines()[0] if text else type(exc).__name__
    if "Unsupported global" in text:
        msg = "it holds Python objects other than tensors, which are never unpickled"
    elif "Weights only load failed" in text:
        msg = "it uses pickle features beyond plain tensors, which are never unpickled"
    return WeightsError(f"{path}: cannot load weights ({msg[:200]})")


def _torch_load(path: Path) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on pickle protocols would be extra lines on stderr
        # mmap reads only torch's zip layout; the older single-pickle layout is read whole, as safely.
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def read_state_dict(directory: Path) -> dict[str, Any]:
    """The tensors of a checkpoint folder's weights file, read without running any pickled code."""
    import torch

    path = _weights_path(directory)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = _torch_load(path)
    except Exception as exc:  # truncated, corrupted or hostile files all end here
        raise _unreadable(path, exc) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state_dict of tensors")
    return state


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as stream:
        header_len = int.from_bytes(stream.read(8), "little")
        if header_len > path.stat().st_size:
            raise ValueError(f"a header of {header_len} bytes in a file of {path.stat().st_size}")
        header = json.loads(stream.read(header_len))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return {"__header_len__": header_len, **header}


def safetensors_data_end(path: Path) -> int:
    """The file size a safetensors header describes (header plus the last tensor's end)."""
    header = _safetensors_header(path)
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if not k.startswith("__")]
    return 8 + header["__header_len__"] + max(ends, default=0)


def tensor_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's key and shape in a checkpoint folder's weights file (safetensors: from its header alone)."""
    path = _weights_path(directory)
    try:
        if path.suffix == ".safetensors":
            header = _safetensors_header(path)
            return {k: tuple(int(n) for n in v["shape"]) for k, v in header.items() if not k.startswith("__")}
        return {k: tuple(v.shape) for k, v in _torch_load(path).items()}
    except Exception as exc:
        raise _unreadable(path, exc) from None


def count_parameters(shapes: dict[str, tuple[int, ...]]) -> int:
    """Learned numbers in a state_dict of these shapes (BatchNorm running statistics not counted)."""
    return sum(math.prod(shape) for key, shape in shapes.items() if not key.endswith(BUFFER_SUFFIXES))
