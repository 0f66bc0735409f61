"""What a run measured for each row, and the figures derived from it (speed-up, memory ratio, stage rates)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

from benchmarks.tasks import DECODE, LATENT_STACK, MODEL_FORWARD, Row, Stage

SIDES = ("ours", "transformers")


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing or zero."""
    return a / b if a and b else None


@dataclass
class RowResult:
    """Everything measured for one row."""

    row: Row
    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    stages: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {s: [] for s in SIDES})
    peak_rss: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SIDES})
    rss_model: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SIDES})
    checksums: dict[str, set] = field(default_factory=lambda: {s: set() for s in SIDES})
    fingerprints: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    flops: dict[str, Any] = field(default_factory=dict)
    profile: Optional[list[dict]] = None
    profile_unit: str = ""
    bound: Optional[Any] = None  # benchmarks.bound.StackBound of the row's latent stack, rows per pass included

    def add(self, result: dict) -> None:
        """Fold one child's result for this row in."""
        side, scale = result["side"], result["scale"]
        self.times[side].extend(s * scale for s in result.get("seconds", []))
        self.stages[side].extend({k: v * scale for k, v in st.items()} for st in result.get("stages", []))
        self.peak_rss[side].append(result["peak_rss"])
        self.rss_model[side].append(result["rss_model"])
        self.checksums[side].add(round(result["checksum"], 3))
        if "fingerprint" in result:
            self.fingerprints[side] = result["fingerprint"]
        if result.get("note"):
            self.notes[side] = result["note"]

    def median(self, side: str) -> Optional[float]:
        """Median time of one side (None if it never ran)."""
        return statistics.median(self.times[side]) if self.times[side] else None

    def stage_median(self, side: str, stage: str) -> Optional[float]:
        """Median time of one stage (derived 'decode' = total - encoder, per repeat)."""
        values = []
        for total, st in zip(self.times[side], self.stages[side]):
            if stage == DECODE:
                if "encoder" in st:
                    base = st[MODEL_FORWARD] if self.row.task == "flow" and MODEL_FORWARD in st else total
                    values.append(base - st["encoder"])
            elif stage in st:
                values.append(st[stage])
        return statistics.median(values) if values else None

    def peak(self, side: str) -> Optional[int]:
        """Largest peak RSS of one side over its children."""
        return max(self.peak_rss[side]) if self.peak_rss[side] else None

    def speed_up(self) -> Optional[float]:
        """transformers' median time / ours."""
        return ratio(self.median("transformers"), self.median("ours"))

    def memory_ratio(self) -> Optional[float]:
        """Our peak RSS / transformers'."""
        return ratio(self.peak("ours"), self.peak("transformers"))

    def agreement(self) -> Optional[float]:
        """max |ours - theirs| / max |theirs| over the compared outputs."""
        a, b = self.fingerprints.get("ours"), self.fingerprints.get("transformers")
        if not a or not b or len(a) != len(b):
            return None
        scale = max(abs(x) for x in b) or 1.0
        return max(abs(x - y) for x, y in zip(a, b)) / scale


def stage_flops(res: RowResult, st: Stage, side: str) -> int:
    """FLOPs of one reported stage for one side (0 = ours, 1 = transformers in the flops tuples)."""
    index = 0 if side == "ours" else 1
    if st.name == MODEL_FORWARD:
        return res.flops["total"][index]
    return sum(res.flops["stages"].get(name, (0, 0))[index] for name in st.flops)


def stage_rate(res: RowResult, st: Stage, side: str) -> Optional[float]:
    """Achieved GFLOP/s of a stage for one side."""
    seconds = res.stage_median(side, st.name)
    if not seconds or seconds <= 0:
        return None
    return stage_flops(res, st, side) / seconds / 1e9


def stage_bound(res: RowResult, st: Stage, peak_gflops: float) -> Optional[float]:
    """The most GFLOP/s a stage could reach here with torch's kernels (benchmarks.bound): the latent stack's
    kernel bound, and for the whole forward, that stack at its bound with every other product at the peak."""
    if res.bound is None:
        return None
    if st.name == LATENT_STACK:
        return res.bound.gflops
    if st.name == MODEL_FORWARD:
        total, stack = stage_flops(res, st, "ours"), res.flops["stages"][LATENT_STACK][0]
        return total / (stack / res.bound.gflops + (total - stack) / peak_gflops)
    return None
