"""Test-wide settings, and the --device option: where the core tests run our models.

`python -m pytest --device cuda` runs the parity tests on a GPU (transformers, the oracle, stays on the
CPU); the command tests always run wherever `--device auto` puts them (a GPU when there is one).
"""

import pytest
import torch

# Tiny models gain nothing from threads, and on a busy 2-core machine extra threads make them much slower.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device our models run on in the core tests: cpu (default), cuda, cuda:N or mps")


def pytest_configure(config):
    device = config.getoption("--device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device}: no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise pytest.UsageError("--device mps: MPS is not available")
    if device != "cpu" and not device.startswith("cuda") and device != "mps":
        raise pytest.UsageError(f"--device {device}: use cpu, cuda, cuda:N or mps")


@pytest.fixture
def device(request) -> str:
    """The --device the core tests run our models on."""
    return request.config.getoption("--device")
