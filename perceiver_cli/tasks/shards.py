"""Shards: a deterministic 1/N of a run's items, chosen by hashing each item's key.

An item belongs to shard `hash(key) mod N`, so the N shards are disjoint and together cover every item, and
an item stays in its shard when other inputs are added to or removed from the list (Slurm arrays, ranks).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional

from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.base import Item

AUTO = "auto"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def holds(self, key: str) -> bool:
        """Whether the item with this key belongs to this shard."""
        return shard_of(key, self.count) == self.index

    def select(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items of this shard, in their order."""
        return (item for item in items if self.holds(item.key))


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) an item key falls in: a stable hash, the same in every process and on every machine."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def _whole(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--shard: {name} is {value!r}, not a whole number") from None


def _from_environment(environ: Mapping[str, str]) -> tuple[int, int]:
    """(index, count) from a Slurm job array, else from torchrun's RANK / WORLD_SIZE."""
    if environ.get("SLURM_ARRAY_TASK_ID") and environ.get("SLURM_ARRAY_TASK_COUNT"):
        task_id = _whole("SLURM_ARRAY_TASK_ID", environ["SLURM_ARRAY_TASK_ID"])
        first = _whole("SLURM_ARRAY_TASK_MIN", environ.get("SLURM_ARRAY_TASK_MIN") or "0")
        step = _whole("SLURM_ARRAY_TASK_STEP", environ.get("SLURM_ARRAY_TASK_STEP") or "1")
        count = _whole("SLURM_ARRAY_TASK_COUNT", environ["SLURM_ARRAY_TASK_COUNT"])
        if step < 1 or (task_id - first) % step:
            raise UsageError(f"--shard auto: SLURM_ARRAY_TASK_ID {task_id} is not on the array's steps "
                             f"(from {first} by {step})")
        return (task_id - first) // step, count
    if environ.get("RANK") and environ.get("WORLD_SIZE"):
        return _whole("RANK", environ["RANK"]), _whole("WORLD_SIZE", environ["WORLD_SIZE"])
    raise UsageError("--shard auto: neither SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT nor RANK and "
                     "WORLD_SIZE are set (give --shard I/N instead)")


def parse_shard(text: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Optional[Shard]:
    """`I/N` (0-based I), or `auto` read from the environment; None when no shard was asked for."""
    if text is None:
        return None
    if text.strip().lower() == AUTO:
        index, count = _from_environment(os.environ if environ is None else environ)
        where = f" (from the environment: {index}/{count})"
    else:
        parts = text.split("/")
        if len(parts) != 2:
            raise UsageError(f"--shard must be I/N (shard I of N, counted from 0) or auto, got {text!r}")
        index, count = _whole("I", parts[0].strip()), _whole("N", parts[1].strip())
        where = ""
    if count < 1:
        raise UsageError(f"--shard: the number of shards must be at least 1, got {count}{where}")
    if not 0 <= index < count:
        raise UsageError(f"--shard: shard {index} is not between 0 and {count - 1}{where}")
    return Shard(index, count)
