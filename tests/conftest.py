"""Test-wide settings."""

import torch

# Tiny models gain nothing from threads, and on a busy 2-core machine extra threads make them much slower.
torch.set_num_threads(1)
