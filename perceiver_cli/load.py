"""Loading a checkpoint for a run: weights finds the folder, core builds the model and loads it strictly."""

from __future__ import annotations

import os
from typing import Optional

import torch


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device = "auto",
               dtype: Optional[str | torch.dtype] = None, numerics: str = "deepmind",
               task: Optional[str] = None) -> torch.nn.Module:
    """A Perceiver IO checkpoint by short name, hub repo id, folder or DeepMind file, in eval mode on `device`."""
    from perceiver_cli.core.loading import load_model as core_load
    from perceiver_cli.runtime import DTYPES, pick_device

    from perceiver_cli.runtime import Runtime, configure_threads, pick_dtype

    chosen = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen)
    name = next(k for k, v in DTYPES.items() if v == chosen_dtype)
    model = core_load(name_or_path, device=str(chosen), dtype=name, numerics=numerics, task=task)
    model.runtime = Runtime(chosen, chosen_dtype, 1, configure_threads())  # where the API runs it
    return model
