"""The largest size a user or a config may ask for: each a generous multiple of what any real use needs, and low
enough that asking for it cannot fill the machine. One table for options, one for config.json fields; no heavy
imports (commands check their options before torch loads).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from perceiver_cli.errors import UsageError

# Options: the largest value each takes (the smallest is each command's own, usually 1).
OPTION_LIMITS: dict[str, int] = {
    "--batch-size": 4096,
    "--wheel": 8192,  # a legend picture of 8192x8192 pixels is 200 MB; a wall poster needs less
    "--max-span": 256,  # bytes a single [MASK] may fill; words and short phrases need a few dozen
    "--step": 1_000_000,
    "--chunk-size": 1 << 24,
}
# Video times in seconds (--start, --end): a year of video, far past any file's length.
MAX_SECONDS = 365 * 24 * 3600.0

# config.json sizes: the published six top out at about a tenth to a quarter of these (checkpoints.md); the
# tests' tiny configs are far below. A field over its limit is no real model, and building it would exhaust
# memory before any check of ours could speak.
CONFIG_LIMITS: dict[str, int] = {
    "num_latents": 16384, "d_latents": 16384, "d_model": 16384, "qk_channels": 16384, "v_channels": 16384,
    "num_blocks": 256, "num_self_attends_per_block": 256, "num_self_attention_heads": 256,
    "num_cross_attention_heads": 256, "self_attention_widening_factor": 64, "cross_attention_widening_factor": 64,
    "vocab_size": 1 << 20, "max_position_embeddings": 1 << 16, "image_size": 2048, "train_size": 2048,
    "num_frames": 1024, "audio_samples_per_frame": 48000, "samples_per_patch": 48000, "output_shape": 2048,
    "output_num_channels": 16384, "_label_trainable_num_channels": 16384, "num_labels": 1 << 20,
    "id2label": 1 << 20,
}


def check_option(option: str, value: Optional[int], minimum: int = 1) -> Optional[int]:
    """`value` of a size option, or a UsageError naming it when it is below `minimum` or over its limit."""
    limit = OPTION_LIMITS[option]
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be at least {minimum}, got {value}")
    if value is not None and value > limit:
        raise UsageError(f"{option} must be at most {limit:,}, got {value}")
    return value


def check_seconds(option: str, value: Optional[float]) -> Optional[float]:
    """A video time option: a finite number of seconds from 0 to MAX_SECONDS, else a UsageError naming it."""
    if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise UsageError(f"{option} must be a number of seconds from 0 to {MAX_SECONDS:,.0f}, got {value}")
    return value


def _numbers(value: Any) -> list[Any]:
    """The numbers a config field holds: itself, or the items of a list (a shape) or a mapping (labels)."""
    if isinstance(value, Mapping):
        return [len(value)]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def config_size_problems(config: Mapping[str, Any]) -> list[str]:
    """The config.json fields whose sizes are over CONFIG_LIMITS, each named with its value and its limit."""
    problems = []
    for name, limit in CONFIG_LIMITS.items():
        value = config.get(name)
        over = [v for v in _numbers(value) if isinstance(v, (int, float)) and not isinstance(v, bool)
                and not (v <= limit)]  # NaN is over too
        if over:
            shown = f"{len(value)} labels" if isinstance(value, Mapping) else repr(value)
            problems.append(f"{name} {shown} is over the largest size any Perceiver IO model uses here ({limit:,})")
    return problems


def check_config_sizes(config: Mapping[str, Any], error: type[Exception] = UsageError) -> None:
    """Refuse (`error`, one line naming every field over its limit) a config.json no real model can have."""
    problems = config_size_problems(config)
    if problems:
        raise error(f"config.json: {'; '.join(problems)}")
