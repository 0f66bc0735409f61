"""perceiver-cli: DeepMind's pretrained Perceiver IO models on your own files.

The Python API (the names in `perceiver_cli.api.__all__`: `load_model`, `fill_mask`, `classify`, `flow`,
`autoencode`, `features`) is imported on first use, so `import perceiver_cli` stays light (no torch) for the
command line.
"""

from importlib.util import find_spec

__version__ = "0.1.0"


def __getattr__(name: str):
    # Private names and submodules never load the API (it imports torch): `from perceiver_cli import cli`
    # stays light. Any other name is the API's when api.__all__ lists it.
    if not name.startswith("_") and find_spec(f"{__name__}.{name}") is None:
        from perceiver_cli import api

        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module 'perceiver_cli' has no attribute '{name}'")


def __dir__():
    from perceiver_cli import api

    return sorted([*globals(), *api.__all__])
