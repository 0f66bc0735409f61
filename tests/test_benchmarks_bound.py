"""benchmarks.bound: the kernel bound of a latent stack layer covers exactly the layer's products, and the
report's verdict says when the bound itself is below a target. Nothing about time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bound, flops, timing  # noqa: E402
from benchmarks.configs import FULL_CONFIGS, QUICK_CONFIGS  # noqa: E402
from benchmarks.harness import stack_rows_of  # noqa: E402
from benchmarks.results import RowResult, stage_bound  # noqa: E402
from benchmarks.targets import stage_verdict  # noqa: E402
from benchmarks.tasks import FP32_ROWS, FULL, ROWS  # noqa: E402


def _dims(config: dict) -> flops.LayerDims:
    return flops.layer_dims(flops.meta_model(config).perceiver.encoder.self_attends[0])


@pytest.mark.parametrize("kind", sorted(QUICK_CONFIGS))
def test_bound_times_every_product_of_a_layer_once(kind):
    dims = _dims(QUICK_CONFIGS[kind])
    b = bound.stack_bound(dims, rows=3, num_latents=16, min_seconds=0.0)
    dense = [k for k in b.kernels if not k.product.startswith("attention")]
    assert sum(k.count for k in dense) == 6
    assert [k.count for k in b.kernels if k.product.startswith("attention")] == [1]
    # the products' FLOPs add up to benchmarks.flops' count of the layer, for all the pass's rows
    assert sum(k.count * k.flops for k in b.kernels) == b.flops == 3 * flops.reference_layer(dims, 16, 16)
    assert all(k.seconds > 0 for k in b.kernels)
    assert {k.kernel for k in b.kernels} <= {"BLAS", "oneDNN", "SDPA", "written out, all heads at once",
                                             "written out, one head at a time"}
    assert b.seconds == pytest.approx(sum(k.count * k.seconds for k in b.kernels))
    # a median call is never faster than the best one
    assert all(k.median_seconds >= k.seconds for k in b.kernels) and b.median_gflops <= b.gflops


def test_written_out_attention_engines_compute_the_whole_attention_softmax_included():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 10, 4, generator=gen) for _ in range(3))
    q = q * 4 ** -0.5  # the written-out engines take the scale as folded into the queries
    expected = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    written_out = {name: run for name, run in bound.attention_engines(q, k, v).items() if name != "SDPA"}
    assert len(written_out) == 2
    for name, engine in written_out.items():
        torch.testing.assert_close(engine(), expected, msg=name)


def test_call_seconds_keeps_calling_until_both_limits_are_reached():
    calls = []
    times = timing.call_seconds(lambda: calls.append(1), lambda: None, min_seconds=0.0, tries=5)
    assert len(times) == 5 and len(calls) == 6  # one warm-up
    times = timing.call_seconds(lambda: __import__("time").sleep(0.002), lambda: None, min_seconds=0.02, tries=1)
    assert sum(times) >= 0.02 and len(times) >= 2


class _CoarseClock:
    """A clock that moves by `tick` only every `every` readings: shorter calls read as taking 0 s."""

    def __init__(self, every: int, tick: float = 1e-3):
        self.readings, self.every, self.tick = 0, every, tick

    def __call__(self) -> float:
        self.readings += 1
        return (self.readings // self.every) * self.tick


def test_a_call_shorter_than_the_clock_is_never_timed_as_zero():
    calls = []
    clock = _CoarseClock(every=7)
    seconds = timing.timed_call(lambda: calls.append(1), lambda: None, clock)
    assert seconds > 0 and len(calls) > 1  # timed again over more calls until the clock moved
    times = timing.call_seconds(lambda: calls.append(1), lambda: None, min_seconds=0.0, tries=20,
                                clock=_CoarseClock(every=5))
    assert len(times) == 20 and all(t > 0 for t in times)


def test_a_spent_time_budget_still_times_the_calls_asked_for():
    # a slow machine: one call takes longer than the whole budget, yet `tries` calls are timed
    clock = _CoarseClock(every=1, tick=10.0)
    times = timing.call_seconds(lambda: None, lambda: None, min_seconds=0.1, tries=3, clock=clock)
    assert len(times) == 3 and min(times) > 0
    assert len(timing.call_seconds(lambda: None, lambda: None, min_seconds=0.0, tries=0, clock=clock)) == 1


def test_shapes_sharing_a_size_are_timed_once_and_counted_by_use():
    dims = _dims(FULL_CONFIGS["language"])  # queries and keys 1280 -> 256; the other four 1280 -> 1280
    b = bound.stack_bound(dims, rows=1, num_latents=8, min_seconds=0.0)
    assert sorted(k.count for k in b.kernels) == [1, 2, 4]


def test_rows_per_pass_follow_the_core():
    rows = {r.key: stack_rows_of(r, FULL_CONFIGS[r.kind], FULL, "cpu") for r in FP32_ROWS}
    # 256-latent texts: one text, then 4 a pass; 512-latent images: 2 a pass; flow and the clip: one
    assert rows == {"fill-mask": 1, "fill-mask-batch": 4, "classify-conv": 2, "classify-fourier": 2,
                    "classify-learned": 2, "flow": 1, "autoencode-video": 1}
    # a bfloat16 row runs its float32 row's unit of work
    bf16 = [r for r in ROWS if r.dtype != "float32"]
    assert bf16 and all(stack_rows_of(r, FULL_CONFIGS[r.kind], FULL, "cpu") == rows[r.fp32_row().key] for r in bf16)


class _Bound:
    def __init__(self, gflops: float):
        self.gflops = gflops


def _result(stack_seconds: float, bound_gflops: float) -> RowResult:
    row = next(r for r in ROWS if r.key == "classify-conv")
    res = RowResult(row, flops={"stages": {"latent self-attention": (100e9, 100e9),
                                           "encoder cross-attention": (10e9, 10e9)}, "total": (110e9, 110e9)})
    res.times["ours"] = [stack_seconds + 0.1]
    res.stages["ours"] = [{"latent self-attention": stack_seconds, "model forward": stack_seconds + 0.1}]
    res.bound = _Bound(bound_gflops)
    return res


def test_forward_bound_puts_the_rest_at_the_peak():
    res = _result(1.0, 50.0)
    forward = next(st for st in res.row.stages if st.name == "model forward")
    # 100 GFLOP at 50 GFLOP/s + 10 GFLOP at the 200 GFLOP/s peak
    assert stage_bound(res, forward, 200.0) == pytest.approx(110 / (2 + 0.05))


def test_verdict_says_when_the_bound_is_below_the_target():
    stack = next(st for st in FP32_ROWS[2].stages if st.name == "latent self-attention")
    assert stage_verdict(_result(1.0, 130.0), stack, 200.0) == "MISS (the kernel bound is below the target)"
    assert stage_verdict(_result(1.0, 150.0), stack, 200.0) == "MISS"  # 100 GFLOP/s achieved, 140 needed
    assert stage_verdict(_result(0.5, 150.0), stack, 200.0) == "PASS"  # 200 GFLOP/s achieved
