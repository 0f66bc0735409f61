"""Checkpoint loading: a directory with config.json + model.safetensors or pytorch_model.bin, strictly.

Weights are never read through code-running pickle: safetensors, or torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from perceiver_cli.core.models import build_model
from perceiver_cli.core.spec import NUMERICS, PerceiverSpec, spec_from_config
from perceiver_cli.errors import UsageError, WeightsError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_config(directory: Path) -> dict:
    """Parse directory/config.json with one-line errors."""
    path = directory / "config.json"
    if not path.is_file():
        raise WeightsError(f"{directory}: no config.json in this weights folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: not a JSON object")
    return config


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Read the weights file of a checkpoint directory without running any pickled code."""
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            break
    else:
        raise WeightsError(f"{directory}: no weights file (expected {' or '.join(WEIGHT_FILES)})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols would be extra lines on stderr
            # mmap reads only torch's zip layout; the older single-pickle layout is read whole, as safely.
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # truncated, corrupted or hostile files all end here
        text = str(exc)
        msg = text.splitlines()[0] if text else type(exc).__name__
        if "Unsupported global" in text:
            msg = "it holds Python objects other than tensors, which are never unpickled"
        elif "Weights only load failed" in text:
            msg = "it uses pickle features beyond plain tensors, which are never unpickled"
        raise WeightsError(f"{path}: cannot load weights ({msg[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state_dict of tensors")
    return state


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`; any missing, unexpected or mis-shaped key is one clear error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} key(s) of the wrong shape: {k} is {tuple(state[k].shape)}, "
                        f"expected {tuple(expected[k].shape)}")
    if problems:
        raise WeightsError(f"{source}: weights do not match the config ({'; '.join(problems)})")
    model.load_state_dict(state, strict=True, assign=True)


def pick_device(device: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is absent is a usage error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise UsageError(f"unknown device '{device}' (use auto, cpu, cuda or mps)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps was asked for, but MPS is not available")
    return torch.device(device)


def model_from_directory(directory: Path, numerics: str = "deepmind",
                         spec: Optional[PerceiverSpec] = None) -> nn.Module:
    """Build the model a checkpoint directory describes and load its weights strictly (CPU, float32)."""
    spec = spec or spec_from_config(read_config(directory))
    with torch.device("meta"):
        model = build_model(spec, numerics)
    state = read_state_dict(directory)
    load_state_dict_strict(model, state, str(directory))
    return model


def load_model(name_or_path: str | Path, device: str = "auto", dtype: str = "float32", numerics: str = "deepmind",
               task: Optional[str] = None) -> nn.Module:
    """Load a Perceiver IO checkpoint by short name, hub repo id, directory or DeepMind file; eval mode.

    A str is resolved as a name first, a Path always as a file or folder (see weights.resolve_checkpoint).

    `task` (fill-mask, classify, flow, autoencode-video) refuses a checkpoint of another class.
    The model's `spec` attribute holds its sizes and labels.
    """
    if numerics not in NUMERICS:
        raise UsageError(f"unknown --numerics '{numerics}' (use {' or '.join(NUMERICS)})")
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype '{dtype}' (use {', '.join(DTYPES)})")
    torch_device = pick_device(device)
    from perceiver_cli.weights import resolve_checkpoint

    directory = Path(resolve_checkpoint(name_or_path))
    spec: PerceiverSpec = spec_from_config(read_config(directory))
    if task is not None and spec.task != task:
        raise UsageError(f"{name_or_path}: this is a {spec.architecture} checkpoint ({spec.kind}), "
                         f"which cannot run '{task}'")
    model = model_from_directory(directory, numerics, spec)
    if DTYPES[dtype] != torch.float32 and torch_device.type == "cpu":
        raise UsageError(f"--dtype {dtype} is for accelerators; on the CPU use float32")
    if DTYPES[dtype] == torch.float32 and torch_device.type == "cuda":
        # float32 means float32: torch keeps TF32 tensor cores off for matrix products by default but on for
        # cuDNN convolutions (vision-conv's stem), whose inputs would then be rounded to 10-bit mantissas.
        torch.backends.cudnn.allow_tf32 = False
    return model.to(device=torch_device, dtype=DTYPES[dtype]).eval().requires_grad_(False)
