"""The fastest a latent self-attention stack could run on this machine with torch's kernels: an upper bound.

A stage at X% of the matmul peak misses a 70% target either because our code wastes time or because the
kernels it is made of cannot go faster on this machine at these sizes. To tell the two apart, every product
of one stack layer is timed alone, on inputs of the sizes the stack runs with (rows per pass included), by
each kernel torch offers for it here, and the best time of each is kept:

- the six dense layers (queries, keys, values, output, two MLP layers): torch's default BLAS (F.linear) and,
  on the CPU where it works, oneDNN's linear op;
- the attention itself (scores, softmax and weighted sum, all heads): torch's fused
  scaled_dot_product_attention, and the same written out as two batched products around a softmax.

Their sum is less than any implementation built from those kernels can take for one layer: layer norms,
GELU and residual adds are left out and every product runs at its own best moment, so the bound is generous.
A target above it cannot be met with torch's kernels on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.flops import LayerDims, reference_layer


@dataclass(frozen=True)
class KernelTime:
    """One product of a layer: what it is, how many times a layer runs it, the best kernel and its time."""

    product: str
    count: int
    kernel: str
    seconds: float
    flops: int

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


@dataclass(frozen=True)
class StackBound:
    """The bound for one layer of a stack: its FLOPs (benchmarks.flops' count) and its least time."""

    dims: LayerDims
    rows: int
    num_latents: int
    kernels: tuple[KernelTime, ...]

    @property
    def flops(self) -> int:
        return self.rows * reference_layer(self.dims, self.num_latents, self.num_latents)

    @property
    def seconds(self) -> float:
        return sum(k.count * k.seconds for k in self.kernels)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


def best_seconds(run: Callable[[], object], sync: Callable[[], None], min_seconds: float, tries: int = 3) -> float:
    """Least wall time of `run` over at least `tries` calls and `min_seconds` of calls (after one warm-up)."""
    run()
    sync()
    best, spent, done = float("inf"), 0.0, 0
    while done < tries or spent < min_seconds:
        start = time.perf_counter()
        run()
        sync()
        took = time.perf_counter() - start
        best, spent, done = min(best, took), spent + took, done + 1
    return best


def dense_engines(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The kernels torch offers here for x @ weight.T + bias."""
    from perceiver_cli.core.layers import onednn_linear_works

    engines: dict[str, Callable[[], object]] = {"BLAS": lambda: F.linear(x, weight, bias)}
    if x.device.type == "cpu" and onednn_linear_works():
        engines["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return engines


def attention_engines(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Ways to compute softmax(q k^T / sqrt(c)) v over (rows, heads, tokens, channels) with torch's kernels."""
    scale = q.shape[-1] ** -0.5

    def written_out() -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    return {"SDPA": lambda: F.scaled_dot_product_attention(q, k, v), "two products": written_out}


def _fastest(engines: dict[str, Callable[[], object]], sync: Callable[[], None],
             min_seconds: float) -> tuple[str, float]:
    times = {name: best_seconds(run, sync, min_seconds) for name, run in engines.items()}
    name = min(times, key=times.get)
    return name, times[name]


def stack_bound(dims: LayerDims, rows: int, num_latents: int, device: str = "cpu",
                min_seconds: float = 1.0) -> StackBound:
    """Time every product of one self-attention layer of these sizes alone, by its fastest kernel here.
    `rows`: sequences per pass through the stack (see perceiver_cli.core.layers.stack_rows)."""
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    tokens = rows * num_latents
    shapes: dict[tuple[int, int], list[str]] = {}
    for name, shape in (("queries", (dims.q_dim, dims.qk)), ("keys", (dims.kv_dim, dims.qk)),
                        ("values", (dims.kv_dim, dims.v)), ("output", (dims.v, dims.out)),
                        ("MLP 1", (dims.out, dims.hidden)), ("MLP 2", (dims.hidden, dims.out))):
        shapes.setdefault(shape, []).append(name)
    kernels = []
    with torch.no_grad():
        for (i, o), names in shapes.items():
            x, w, b = rand(tokens, i), rand(o, i) * i ** -0.5, rand(o)
            kernel, seconds = _fastest(dense_engines(x, w, b), sync, min_seconds)
            kernels.append(KernelTime(f"{' + '.join(names)}: {tokens} x {i} -> {o}", len(names), kernel, seconds,
                                      2 * tokens * i * o))
        h = dims.heads
        q, k = rand(rows, h, num_latents, dims.qk // h), rand(rows, h, num_latents, dims.qk // h)
        v = rand(rows, h, num_latents, dims.v // h)
        kernel, seconds = _fastest(attention_engines(q, k, v), sync, min_seconds)
        kernels.append(KernelTime(f"attention: {rows} x {h} heads x {num_latents}^2, {dims.qk // h}/{dims.v // h} "
                                  "channels", 1, kernel, seconds,
                                  2 * rows * num_latents * num_latents * (dims.qk + dims.v)))
    return StackBound(dims, rows, num_latents, tuple(kernels))
