"""perceiver-cli: DeepMind's pretrained Perceiver IO models on your own files.

The Python API (`load_model`, `fill_mask`, `classify`, `flow`, `autoencode`, `features`) is imported on first
use, so `import perceiver_cli` stays light (no torch) for the command line.
"""

__version__ = "0.1.0"

_API = ("load_model", "fill_mask", "classify", "flow", "autoencode", "features")


def __getattr__(name: str):
    if name in _API:
        from perceiver_cli import api

        if hasattr(api, name):
            return getattr(api, name)
    raise AttributeError(f"module 'perceiver_cli' has no attribute '{name}'")


def __dir__():
    return sorted([*globals(), *_API])
