"""The Perceiver IO core: torch only; knows nothing of files' formats, terminals, Typer or where checkpoints
come from. Names are imported on first use, so `perceiver_cli.core.spec` (plain data) is read without torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "perceiver_cli.core.models",
    "load_state_dict_strict": "perceiver_cli.core.loading",
    "StateDictMismatch": "perceiver_cli.core.loading",
    "spec_from_config": "perceiver_cli.core.spec",
    "check_spec": "perceiver_cli.core.spec",
    "InvalidConfig": "perceiver_cli.core.spec",
    "PerceiverSpec": "perceiver_cli.core.spec",
    "NUMERICS": "perceiver_cli.core.spec",
    "FLOW_SCALE_FACTOR": "perceiver_cli.core.spec",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'perceiver_cli.core' has no attribute '{name}'")


__all__ = sorted(_EXPORTS)
