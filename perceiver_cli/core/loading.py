"""Loading a state dict into a built model strictly: every key used, every shape as the network has it.

Reading files and finding checkpoints is not core's job (see perceiver_cli.load and perceiver_cli.weights).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

# Kept for callers that still import the device choice from here; it lives in perceiver_cli.runtime.


class StateDictMismatch(ValueError):
    """Weights whose keys or shapes are not those of the network: says how many and names the first ones."""


def state_dict_problems(expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]]) -> list[str]:
    """What differs between two {key: shape} maps: missing keys, unexpected keys, shapes (empty if none)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} key(s) of the wrong shape: {k} is {tuple(found[k])}, "
                        f"expected {tuple(expected[k])}")
    return problems


def check_state_dict(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise StateDictMismatch unless `shapes` ({key: shape}) has exactly the model's keys and shapes."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = state_dict_problems(expected, shapes)
    if problems:
        raise StateDictMismatch(f"weights do not match the config ({'; '.join(problems)})")


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy `state` into `model` (built on any device, meta included) strictly; StateDictMismatch if it differs."""
    check_state_dict(model, {key: tuple(value.shape) for key, value in state.items()})
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model
