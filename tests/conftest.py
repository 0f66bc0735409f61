"""Test-wide settings, and the --device option: where the core tests run our models.

`python -m pytest --device cuda` runs the parity tests on a GPU (transformers, the oracle, stays on the
CPU); the command tests always run wherever `--device auto` puts them (a GPU when there is one).
"""

import os

import pytest
import torch

# Tiny models gain nothing from threads, and on a busy 2-core machine extra threads make them much slower.
torch.set_num_threads(1)
# No run of the tests prints progress lines into its captured stderr, however slow a busy machine makes it
# (tests of those lines give --progress-interval themselves); subprocesses inherit it.
os.environ["PERCEIVER_PROGRESS_INTERVAL"] = "86400"


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device our models run on in the core tests: cpu (default), auto, cuda, cuda:N or mps")


def pytest_configure(config):
    from perceiver_cli.runtime import pick_device
    from perceiver_cli.errors import UsageError

    try:  # the commands' own check of a device name, so tests accept exactly what --device accepts there
        config.resolved_device = str(pick_device(config.getoption("--device")))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def device(request) -> str:
    """The device the core tests run our models on (--device, with auto resolved)."""
    return request.config.resolved_device


@pytest.fixture
def run_main(capsys):
    """Run `perceiver ARGS` in this process: (exit code, stdout, stderr) of that one call."""
    from perceiver_cli.cli import main

    def run(*args):
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
