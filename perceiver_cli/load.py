"""Loading a checkpoint, above core and weights: weights finds the folder and reads its files, core builds the
network from the config and loads the weights strictly, and core's errors become the user's words here.

    model = load_model("flow")                      # a short name, hub repo id, folder or DeepMind file
    model = load_model(Path("my-checkpoint/"))      # a Path is always a file or folder
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

# First: runtime imports torch with signals deferred (a signal inside torch's start-up would abort the process).
from perceiver_cli.runtime import cpu_bf16_units, pick_device, pick_dtype

import torch
from torch import nn

from perceiver_cli.core.loading import StateDictMismatch, load_state_dict_strict
from perceiver_cli.core.models import build_model
from perceiver_cli.core.spec import NUMERICS, InvalidConfig, PerceiverSpec, check_spec, spec_from_config
from perceiver_cli.errors import UsageError, WeightsError
from perceiver_cli.weights.folder import read_config, read_state_dict
from perceiver_cli.weights.resolve import resolve_checkpoint
from perceiver_cli.weights.verify import Check


def read_spec(directory: Path) -> PerceiverSpec:
    """The checked sizes of a checkpoint folder's config.json; WeightsError naming the folder and the fields."""
    try:
        spec = spec_from_config(read_config(directory))
        check_spec(spec)
        return spec
    except InvalidConfig as exc:
        raise WeightsError(f"{directory}: {exc}") from None


def model_from_directory(directory: Path, numerics: str = "deepmind",
                         spec: Optional[PerceiverSpec] = None) -> nn.Module:
    """Build the network a checkpoint folder describes and load its weights strictly (CPU, float32, eval)."""
    spec = spec or read_spec(directory)
    with torch.device("meta"):
        model = build_model(spec, numerics)
    state = read_state_dict(directory)
    try:
        load_state_dict_strict(model, state)
    except StateDictMismatch as exc:
        raise WeightsError(f"{directory}: {exc}") from None
    return model.eval().requires_grad_(False)


def _warn(message: Optional[str]) -> None:
    """A caveat, said at each load: a run loads its model once, so a command says it once."""
    if message:
        print(f"perceiver: warning: {message}", file=sys.stderr, flush=True)


def _caveat(name_or_path: str | os.PathLike, directory: Path, model: nn.Module) -> Optional[str]:
    """Why this checkpoint's outputs are not what its name promises: random weights (perceiver weights tiny), or
    a folder cached under a published name that is not the published checkpoint; None for neither."""
    from perceiver_cli.tiny import RANDOM_KEY
    from perceiver_cli.weights.registry import find_checkpoint
    from perceiver_cli.weights.resolve import means_local
    from perceiver_cli.weights.verify import compare_with_published, stand_in_message

    random = read_config(directory).get(RANDOM_KEY)
    if random:
        return f"{os.fspath(name_or_path)}: {random}"
    if isinstance(name_or_path, os.PathLike) or means_local(name_or_path):
        return None
    entry = find_checkpoint(name_or_path)
    if entry is None:
        return None
    # A strict load made the model's keys and shapes the file's: no second read of a large weights file.
    found = compare_with_published(directory, entry, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    return None if found.matches else stand_in_message(entry, found)


def check_task(spec, task: str, name: str) -> None:
    """A usage error naming `name` when the checkpoint `spec` describes cannot run `task`."""
    if spec.task != task:
        raise UsageError(f"{name}: this is a {spec.architecture} checkpoint ({spec.kind}), which cannot run '{task}'")


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device = "auto",
               dtype: str | torch.dtype | None = None, numerics: str = "deepmind",
               task: Optional[str] = None) -> nn.Module:
    """Load a Perceiver IO checkpoint by short name, hub repo id, folder or DeepMind file, in eval mode on
    `device`, with its sizes and labels as `model.spec`.

    A str is resolved as a name first, a Path always as a file or folder (see weights.resolve_checkpoint).
    `task` (fill-mask, classify, flow, autoencode-video) refuses a checkpoint of another class.
    """
    if numerics not in NUMERICS:
        raise UsageError(f"unknown --numerics '{numerics}' (use {' or '.join(NUMERICS)})")
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    directory = Path(resolve_checkpoint(name_or_path))
    spec = read_spec(directory)
    if task is not None:
        check_task(spec, task, os.fspath(name_or_path))
    model = model_from_directory(directory, numerics, spec)
    _warn(_caveat(name_or_path, directory, model))
    if torch_dtype == torch.float32 and torch_device.type == "cuda":
        # float32 means float32: torch keeps TF32 tensor cores off for matrix products by default but on for
        # cuDNN convolutions (vision-conv's stem), whose inputs would then be rounded to 10-bit mantissas.
        torch.backends.cudnn.allow_tf32 = False
    model = model.to(device=torch_device, dtype=torch_dtype)
    return model


def tiny_forward(model: nn.Module) -> torch.Tensor:
    """Run the network once on its kind's example input (CPU, zeros); returns its main output."""
    spec: PerceiverSpec = model.spec
    inputs = [torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in spec.row.example_input(spec)]
    with torch.inference_mode():
        return model(*inputs)


def load_checks(directory: Path) -> list[Check]:
    """`perceiver weights verify`'s checks above weights: the config's sizes, a strict load, one tiny forward."""
    try:
        spec = read_spec(directory)
    except WeightsError as exc:
        return [Check("FAIL", "config", str(exc).removeprefix(f"{directory}: "))]
    checks = [Check("OK", "config", f"a consistent {spec.architecture} config")]
    try:
        model = model_from_directory(directory, "deepmind", spec)
    except WeightsError as exc:  # the reason is in the message; anything else is a broken file too
        return checks + [Check("FAIL", "load", f"does not load strictly: {str(exc)[:240]}")]
    except Exception as exc:
        return checks + [Check("FAIL", "load", f"does not load strictly: {type(exc).__name__}: {str(exc)[:200]}")]
    checks.append(Check("OK", "load", f"loads strictly ({len(model.state_dict())} tensors, every one used)"))
    try:
        out = tiny_forward(model)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return checks + [Check("FAIL", "run", f"a forward pass on a tiny input fails: {reason[:200]}")]
    if not torch.isfinite(out).all():
        return checks + [Check("FAIL", "run", "a forward pass on a tiny input gives non-finite values")]
    return checks + [Check("OK", "run", f"a forward pass on a tiny input gives finite outputs {tuple(out.shape)}"),
                     compute_check()]


def compute_check() -> Check:
    """A NOTE naming what `--dtype auto` computes in on this machine's CPU, and why."""
    units = cpu_bf16_units()
    if units:
        return Check("NOTE", "compute", f"--dtype auto runs bfloat16 on this CPU ({units}: native bf16 matrix "
                     "products); float32 is the default")
    return Check("NOTE", "compute", "--dtype auto runs float32 on this CPU (no native bf16 matrix units)")
