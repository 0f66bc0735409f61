"""Small random checkpoints for trying the commands and wiring them into pipelines offline: each kind's tiny
widths (its row in kinds.py) with the real input and output shapes and labels, built by the package's own
model code, saved as a checkpoint folder whose config says it is random. Loading one warns once (load.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perceiver_cli.errors import UsageError
from perceiver_cli.kinds import AUTOENCODE_VIDEO, BY_NAME, CLASSIFY, KINDS
from perceiver_cli.labels import IMAGENET_LABELS, KINETICS_LABELS, shipped_labels

# The config key that marks a random checkpoint, and what the warning at load says.
RANDOM_KEY = "perceiver_cli_random"
RANDOM_NOTE = "random weights made by `perceiver weights tiny`: its outputs are meaningless"
# The label lists of the tasks whose real checkpoints name classes.
LABELS = {CLASSIFY: IMAGENET_LABELS, AUTOENCODE_VIDEO: KINETICS_LABELS}


def tiny_config(kind_name: str) -> dict[str, Any]:
    """The config.json of a small random checkpoint of `kind_name`."""
    kind = BY_NAME.get(kind_name)
    if kind is None:
        raise UsageError(f"unknown kind '{kind_name}': use one of {', '.join(k.name for k in KINDS)}")
    config: dict[str, Any] = {**kind.tiny, **kind.real_shapes, "architectures": [kind.architecture]}
    if kind.task in LABELS:
        names = shipped_labels(LABELS[kind.task])
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["num_labels"] = len(names)
    config[RANDOM_KEY] = RANDOM_NOTE
    return config


def make_tiny(kind_name: str, directory: Path, seed: int = 0) -> Path:
    """Write a small random `kind_name` checkpoint (config.json, model.safetensors) into `directory`."""
    import torch
    from safetensors.torch import save_file

    from perceiver_cli.core.models import build_model
    from perceiver_cli.core.spec import check_spec, spec_from_config
    from perceiver_cli.io.atomic import atomic_write, atomic_write_path

    config = tiny_config(kind_name)
    if (directory.is_dir() and any(directory.iterdir())) or (directory.exists() and not directory.is_dir()):
        raise UsageError(f"{directory}: exists and is not an empty folder; give a new folder")
    spec = spec_from_config(config)
    check_spec(spec)
    torch.manual_seed(seed)
    model = build_model(spec)
    state = {}
    for key, tensor in model.state_dict().items():
        value = tensor.detach().clone()
        if value.is_floating_point():
            scale = 1.0 / max(1, value[0].numel()) ** 0.5 if value.dim() >= 2 else 0.02
            value = torch.randn(value.shape) * scale + (1.0 if key.endswith(("norm.weight", "running_var")) else 0.0)
        state[key] = value.contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(directory / "model.safetensors") as temporary:
        save_file(state, str(temporary))
    with atomic_write(directory / "config.json", "w") as handle:
        handle.write(json.dumps(config, indent=2) + "\n")
    return directory
