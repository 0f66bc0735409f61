"""The targets a run is judged against, in one table, and the verdicts (PASS / MISS) against them.

Speed-up and memory ratio compare ours with transformers in the same run; a stage's share is its achieved
GFLOP/s over the matmul peak measured in that run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from benchmarks.results import RowResult, stage_bound, stage_rate
from benchmarks.tasks import BF16_OF, BF16_SUFFIX, DECODE, FP32_ROWS, LATENT_STACK, MODEL_FORWARD, Stage

SPEED_UP = "speed-up"  # transformers' median time / ours: at least the limit
MEMORY_RATIO = "memory ratio"  # our peak RSS / transformers': at most the limit
PEAK_MEMORY = "peak memory"  # our peak RSS in bytes: below the limit
SHARE_OF_PEAK = "share of the matmul peak"  # a stage's GFLOP/s over the measured peak: at least the limit
HELP_SECONDS = "seconds"  # median wall time of the slowest `perceiver [SUBCOMMAND] --help`: below the limit


@dataclass(frozen=True)
class Target:
    """A named target: what is measured (`measure`, and `stage` for a share of the peak), on which rows, and
    the limit to reach."""

    name: str
    rows: tuple[str, ...]
    measure: str
    limit: float
    stage: Optional[str] = None

    def wording(self) -> str:
        """The requirement in words, e.g. '>= 1.15x' or '< 0.3 s'."""
        if self.measure == SPEED_UP:
            return f">= {self.limit:g}x"
        if self.measure == MEMORY_RATIO:
            return f"<= {self.limit:g}x"
        if self.measure == PEAK_MEMORY:
            return f"< {self.limit / 1e9:g} GB"
        if self.measure == SHARE_OF_PEAK:
            return f">= {self.limit:.0%}"
        return f"< {self.limit:g} s"


_FILL_MASK = ("fill-mask", "fill-mask-batch")


def _bf16(*keys: str) -> tuple[str, ...]:
    return tuple(k + BF16_SUFFIX for k in keys)


_CLASSIFY = ("classify-conv", "classify-fourier", "classify-learned")

TARGETS: tuple[Target, ...] = (
    Target("fill-mask speed", _FILL_MASK, SPEED_UP, 1.2),  # every fp32 row at least 1.2x transformers
    Target("fill-mask memory", _FILL_MASK, MEMORY_RATIO, 0.7),
    Target("classify speed", _CLASSIFY, SPEED_UP, 1.2),
    Target("classify memory", _CLASSIFY, MEMORY_RATIO, 1.0),
    Target("flow speed", ("flow",), SPEED_UP, 2.5),
    Target("flow memory", ("flow",), MEMORY_RATIO, 0.25),
    Target("autoencode-video speed", ("autoencode-video",), SPEED_UP, 8.0),
    Target("autoencode-video memory", ("autoencode-video",), MEMORY_RATIO, 1.0),
    Target("autoencode-video peak memory", ("autoencode-video",), PEAK_MEMORY, 2.5e9),
    Target("latent stack efficiency", tuple(r.key for r in FP32_ROWS), SHARE_OF_PEAK, 0.70, LATENT_STACK),
    Target("classifier forward efficiency", _CLASSIFY, SHARE_OF_PEAK, 0.80, MODEL_FORWARD),
    Target("flow window efficiency", ("flow",), SHARE_OF_PEAK, 0.70, MODEL_FORWARD),
    Target("multimodal decode efficiency", ("autoencode-video",), SHARE_OF_PEAK, 0.70, DECODE),
    # bf16 rows: the "speed-up" and "memory ratio" are against our own float32 (see tasks.Row.dtype)
    Target("bf16 speed, classify and flow", _bf16(*_CLASSIFY, "flow"), SPEED_UP, 1.7),
    Target("bf16 speed, fill-mask and autoencode-video", _bf16("fill-mask-batch", "autoencode-video"), SPEED_UP, 1.5),
    Target("bf16 memory", _bf16(*BF16_OF), MEMORY_RATIO, 1.0),
    Target("help start-up", (), HELP_SECONDS, 0.3),
)
HELP_TARGET = next(t for t in TARGETS if t.measure == HELP_SECONDS)


def targets_of(row_key: str, *measures: str) -> list[Target]:
    """The targets on a row, of the given measures."""
    return [t for t in TARGETS if row_key in t.rows and t.measure in measures]


def stage_target(row_key: str, stage: Stage) -> Optional[float]:
    """The share of the peak a row's stage must reach, or None when it is reported for information."""
    found = [t.limit for t in targets_of(row_key, SHARE_OF_PEAK) if t.stage == stage.name]
    return found[0] if found else None


def _word(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def target_met(target: Target, res: RowResult, peak_gflops: float) -> Optional[bool]:
    """Whether a row's result meets a target (None: not measured)."""
    if target.measure == SPEED_UP:
        speed_up = res.speed_up()
        return None if speed_up is None else speed_up >= target.limit
    if target.measure == MEMORY_RATIO:
        memory = res.memory_ratio()
        return None if memory is None else memory <= target.limit
    if target.measure == PEAK_MEMORY:
        peak = res.peak("ours")
        return None if peak is None else peak < target.limit
    stage = next((st for st in res.row.stages if st.name == target.stage), None)
    rate = None if stage is None else stage_rate(res, stage, "ours")
    return None if rate is None else rate >= target.limit * peak_gflops


def help_met(help_median: Optional[float]) -> Optional[bool]:
    """Whether the median `perceiver --help` time meets its target (None: not measured)."""
    return None if help_median is None else help_median < HELP_TARGET.limit


def verdicts(res: RowResult, peak_gflops: float) -> dict[str, str]:
    """PASS/MISS of a row's time target, its memory target(s) and each stage with a target (by stage label)."""
    row = res.row
    out: dict[str, str] = {}
    for key, measures in (("time", (SPEED_UP,)), ("memory", (MEMORY_RATIO, PEAK_MEMORY))):
        met = [target_met(t, res, peak_gflops) for t in targets_of(row.key, *measures)]
        out[key] = "n/a" if not met or any(m is None for m in met) else _word(all(met))
    for st in row.stages:
        target = next((t for t in targets_of(row.key, SHARE_OF_PEAK) if t.stage == st.name), None)
        if target is not None:
            out[st.label] = _word(target_met(target, res, peak_gflops))
    return out


def stage_verdict(res: RowResult, st: Stage, peak_gflops: float) -> str:
    """verdicts()' word for a stage, saying so when the kernel bound itself is below the target."""
    verdict = verdicts(res, peak_gflops).get(st.label, "(information)")
    bound = stage_bound(res, st, peak_gflops)
    target = stage_target(res.row.key, st)
    if verdict == "MISS" and bound is not None and target is not None and bound < target * peak_gflops:
        return "MISS (the kernel bound is below the target)"
    return verdict
