"""Shell completion of option values, as bash asks the `perceiver` command for them (its completion variable):
-m the command's own models, and each option's choices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _complete(*words: str) -> list[str]:
    """What bash completion offers for the last of `words` (after `perceiver`)."""
    line = ["perceiver", *words]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "_PERCEIVER_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(line),
           "COMP_CWORD": str(len(line) - 1), "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-m", "perceiver_cli"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("words, offered", [
    (["classify", "-m", ""], ["vision-conv", "vision-fourier", "vision-learned"]),
    (["fill-mask", "--model", ""], ["language"]),
    (["classify", "-m", "vision-f"], ["vision-fourier"]),
    (["flow", "--device", ""], ["auto", "cpu", "cuda", "mps"]),
    (["eval", "flow", "--dtype", "b"], ["bfloat16"]),
    (["flow", "--direction", ""], ["forward", "backward", "both"]),
    (["flow", "--style", ""], ["middlebury", "deepmind"]),
    (["draw-flow", "--style", "d"], ["deepmind"]),
    (["classify", "--numerics", ""], ["deepmind", "transformers"]),
    (["flow", "--format", "flo,k"], ["flo,kitti"]),
    (["draw-flow", "--format", "w"], ["webp"]),
    (["autoencode-video", "--format", "mp4,w"], ["mp4,webm", "mp4,wav"]),
])
def test_option_values_complete_to_their_choices(words, offered):
    assert _complete(*words) == offered
