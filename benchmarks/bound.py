"""The fastest a latent self-attention stack could run on this machine with torch's kernels: an upper bound.

A stage at X% of the matmul peak misses a 70% target either because our code wastes time or because the
kernels it is made of cannot go faster on this machine at these sizes. To tell the two apart, every product
of one stack layer is timed alone, on inputs of the sizes the stack runs with (rows per pass included), by
each kernel torch offers for it here, and the best time of each is kept:

- the six dense layers (queries, keys, values, output, two MLP layers): torch's default BLAS (F.linear) and,
  on the CPU where it works, oneDNN's linear op;
- the attention (scores, softmax and weighted sum, all heads): torch's fused scaled_dot_product_attention,
  and written out as its two batched products with torch's softmax between them (over all heads at once,
  and one head at a time; the 1/sqrt(c) scale left out, since an implementation folds it into the queries).

Their sum is less than an implementation built from those kernels can take for one layer: layer norms,
GELU and residual adds are left out and every product runs at its own best moment, so the bound is generous.
A target above it cannot be met with torch's kernels on this machine. (The softmax is kept in: every
attention must compute it, and with many keys and narrow heads it is a large part of the attention's time.)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from benchmarks.timing import call_seconds, synchronizer

if TYPE_CHECKING:
    from benchmarks.flops import LayerDims

# benchmarks.flops (and with it perceiver_cli) is imported only where used, so importing this module loads
# torch alone.


@dataclass(frozen=True)
class KernelTime:
    """One product of a layer: what it is, how many times a layer runs it, the fastest kernel, its best time
    and its median time over the same calls (on a shared machine, what a long run of calls gets)."""

    product: str
    count: int
    kernel: str
    seconds: float
    median_seconds: float
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
        from benchmarks.flops import reference_layer

        return self.rows * reference_layer(self.dims, self.num_latents, self.num_latents)

    @property
    def seconds(self) -> float:
        return sum(k.count * k.seconds for k in self.kernels)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    @property
    def median_gflops(self) -> float:
        """The bound at every product's median speed instead of its best."""
        return self.flops / sum(k.count * k.median_seconds for k in self.kernels) / 1e9


def dense_engines(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The kernels torch offers here for x @ weight.T + bias."""
    from perceiver_cli.core.layers import onednn_linear, onednn_linear_works

    engines: dict[str, Callable[[], object]] = {"BLAS": lambda: F.linear(x, weight, bias)}
    if x.device.type == "cpu" and onednn_linear_works():
        engines["oneDNN"] = lambda: onednn_linear(x, weight, bias)
    return engines


def attention_engines(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Ways to get softmax(q k^T / sqrt(c)) v over (rows, heads, tokens, channels) with torch's kernels: the
    fused kernel, and written out (scores, softmax, weighted sum) over all heads at once or one head at a time."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=v.dtype, device=v.device)

    def all_heads() -> torch.Tensor:
        torch.matmul(q, k.transpose(-1, -2), out=scores)
        return torch.matmul(torch.softmax(scores, dim=-1), v, out=out)

    def head_by_head() -> torch.Tensor:
        for i in range(q.shape[0]):
            for h in range(q.shape[1]):
                torch.matmul(q[i, h], k[i, h].t(), out=scores[i, h])
                torch.matmul(torch.softmax(scores[i, h], dim=-1), v[i, h], out=out[i, h])
        return out

    return {"SDPA": lambda: F.scaled_dot_product_attention(q, k, v),
            "written out, all heads at once": all_heads, "written out, one head at a time": head_by_head}


def _fastest(engines: dict[str, Callable[[], object]], sync: Callable[[], None],
             min_seconds: float) -> tuple[str, float, float]:
    """The engine with the least time: its name, best and median time."""
    times = {name: call_seconds(run, sync, min_seconds) for name, run in engines.items()}
    name = min(times, key=lambda n: min(times[n]))
    return name, min(times[name]), statistics.median(times[name])


def stack_bound(dims: LayerDims, rows: int, num_latents: int, device: str = "cpu",
                min_seconds: float = 1.0) -> StackBound:
    """Time every product of one self-attention layer of these sizes alone, by its fastest kernel here.
    `rows`: sequences per pass through the stack (see perceiver_cli.core.layers.stack_rows)."""
    sync = synchronizer(device)
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
            kernel, seconds, median = _fastest(dense_engines(x, w, b), sync, min_seconds)
            kernels.append(KernelTime(f"{' + '.join(names)}: {tokens} x {i} -> {o}", len(names), kernel, seconds,
                                      median, 2 * tokens * i * o))
        h = dims.heads
        q, k = rand(rows, h, num_latents, dims.qk // h), rand(rows, h, num_latents, dims.qk // h)
        v = rand(rows, h, num_latents, dims.v // h)
        kernel, seconds, median = _fastest(attention_engines(q, k, v), sync, min_seconds)
        kernels.append(KernelTime(f"attention: {rows} x {h} heads x {num_latents}^2, {dims.qk // h}/{dims.v // h} "
                                  "channels", 1, kernel, seconds, median,
                                  2 * rows * num_latents * num_latents * (dims.qk + dims.v)))
    return StackBound(dims, rows, num_latents, tuple(kernels))
