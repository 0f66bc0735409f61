"""Attention layers of Perceiver IO. Module names mirror the hub checkpoints' state_dict keys.

AttentionLayer is the plain block: layer norms, q/k/v projections, attention, output projection, residual,
MLP. EncoderCrossAttention folds the key and value projections into the latents' side (one head, inputs
no wider than the keys); the decoder's folds live in core.decoding. Attention goes through torch's
scaled_dot_product_attention (layers.attention), except where its CPU kernel has no fused path (query/key
heads narrower than value heads) or is slow (bf16) and the scores are multiplied out directly.
"""

from __future__ import annotations

import os
import platform
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_cli.core.spec import LAYER_NORM_EPS
from perceiver_cli.errors import UsageError

# Latent tokens per pass through the self-attention stack on CPU: about 1,024 keeps a pass's activations in
# the cache while giving the matrix products enough rows (see in_passes).
CPU_STACK_TOKENS = 1024

# Matrix products whose output width is not a multiple of this run markedly slower on the CPU; the decoder's
# folded outputs are computed zero-padded to one (see padded_width and core.decoding).
WIDTH_MULTIPLE = 8

# fp32 dense layers on the CPU go either through oneDNN's matrix product (torch.ops.mkldnn._linear_pointwise,
# the op torch's compiler emits for linear layers; its `binary` form adds a residual in the same pass) or
# through the BLAS behind F.linear. Which is faster depends on the CPU: oneDNN picks its kernels from the CPU's
# features, while MKL keeps to AVX2 kernels on AMD processors, so oneDNN is the default only where torch
# reports AVX-512. Both accumulate in fp32. bf16 dense layers (--dtype bfloat16 on the CPU) go the same way:
# oneDNN's bf16 product runs on the CPU's bf16 units (see docs/performance.md for the two engines in bf16).
# ONEDNN_LINEAR: None = decide on first use, which build_model makes happen before any input is read (the
# environment variable PERCEIVER_CLI_CPU_MATMUL=onednn|blas overrides the CPU check; any other value is a
# usage error); True = oneDNN wherever the op works; False = F.linear everywhere.
ONEDNN_LINEAR: Optional[bool] = None
MATMUL_ENV = "PERCEIVER_CLI_CPU_MATMUL"
_ONEDNN_WORKS: Optional[bool] = None
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


# In bf16 on a CPU, SDPA's fused kernel runs its products no faster than in fp32, while plain bf16 batched
# products run on the CPU's bf16 units at about twice the fp32 rate: bf16 attention on a CPU is multiplied out
# instead, a group of heads or a block of queries at a time so that one block's scores stay about
# BF16_SCORES_BYTES (several heads share one product; one head's queries go BF16_QUERY_BLOCK rows or more).
BF16_SCORES_BYTES = 4 << 20
BF16_QUERY_BLOCK = 256


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
              scale: Optional[float] = None) -> torch.Tensor:
    """F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale) for (B, H, N, C) tensors; bf16 on a
    CPU by blocks of batched products (see BF16_SCORES_BYTES)."""
    if q.dtype != torch.bfloat16 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b, h, n = q.shape[:3]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # else each block's product copies its operands
    out = q.new_empty(b, h, n, v.shape[-1])
    if mask is not None:
        mask = mask.expand(b, h, mask.shape[2], k.shape[2])
    no_offset = q.new_zeros(())
    buffer: Optional[torch.Tensor] = None  # every block's scores and weights in one allocation, the first block's size
    for i, heads, rows in attention_blocks(b, h, n, k.shape[2]):
        queries, keys = q[i, heads, rows], k[i, heads].transpose(1, 2)
        if buffer is None:
            buffer = q.new_empty(queries.shape[0], queries.shape[1], keys.shape[2])
        scores = buffer[:queries.shape[0], :queries.shape[1]]
        block = None if mask is None else mask[i, heads, rows if mask.shape[2] > 1 else slice(None)]
        additive = block is not None and block.dtype != torch.bool
        # the scale applied to the fp32 sums inside the product (one rounding fewer than scaling q first)
        torch.baddbmm(block if additive else no_offset, queries, keys, beta=1 if additive else 0, alpha=scale,
                      out=scores)
        if block is not None and not additive:
            scores.masked_fill_(~block, float("-inf"))
        torch.ops.aten._softmax.out(scores, -1, False, out=scores)  # in place: a row is read before it is written
        torch.bmm(scores, v[i, heads], out=out[i, heads, rows])
    return out


def attention_blocks(batch: int, num_heads: int, n_queries: int, n_keys: int):
    """(batch row, heads slice, queries slice) blocks of `attention`'s bf16 products: as many heads as keep a
    block's scores within BF16_SCORES_BYTES, else one head by blocks of at least BF16_QUERY_BLOCK queries."""
    per_head = n_queries * n_keys * 2
    group = max(1, min(num_heads, BF16_SCORES_BYTES // per_head))
    rows = n_queries if group > 1 else max(BF16_QUERY_BLOCK, BF16_SCORES_BYTES // (n_keys * 2))
    for i in range(batch):
        for head in range(0, num_heads, group):
            for start in range(0, n_queries, rows):
                yield i, slice(head, head + group), slice(start, start + rows)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x @ weight.T + bias by oneDNN's linear op (fp32, CPU), whatever ONEDNN_LINEAR says."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_linear_works() -> bool:
    """Whether this torch build runs oneDNN's fp32 linear op on this CPU and it agrees with F.linear
    (probed once)."""
    global _ONEDNN_WORKS
    if _ONEDNN_WORKS is None:
        try:
            x = torch.linspace(-1, 1, 24, device="cpu").view(3, 8)
            w = torch.linspace(-2, 1, 40, device="cpu").view(5, 8)
            b = torch.linspace(0, 1, 5, device="cpu")
            r = torch.ones(3, 5, device="cpu")
            with torch.no_grad():
                plain, fused = onednn_linear(x, w, b), torch.ops.mkldnn._linear_pointwise.binary(x, r, w, b, "add")
                expected = F.linear(x, w, b)
                _ONEDNN_WORKS = bool(torch.allclose(plain, expected, atol=1e-5)
                                     and torch.allclose(fused, expected + r, atol=1e-5))
        except Exception:  # an op missing from this build, or refusing this CPU
            _ONEDNN_WORKS = False
    return _ONEDNN_WORKS


def onednn_linear_preferred() -> bool:
    """The default choice of engine: PERCEIVER_CLI_CPU_MATMUL when set, else oneDNN on x86 CPUs that torch
    runs with AVX-512 kernels."""
    raw = os.environ.get(MATMUL_ENV, "")
    choice = raw.strip().lower()
    if choice in ("onednn", "blas"):
        return choice == "onednn"
    if choice:
        raise UsageError(f"{MATMUL_ENV}: {raw!r} is neither onednn nor blas (unset it to let the CPU decide)")
    return (platform.machine().lower() in ("x86_64", "amd64")
            and "AVX512" in torch.backends.cpu.get_cpu_capability().upper())


def onednn_linear_available() -> bool:
    """Whether `linear` sends CPU fp32 products to oneDNN (decided once; see ONEDNN_LINEAR)."""
    global ONEDNN_LINEAR
    if ONEDNN_LINEAR is None:
        ONEDNN_LINEAR = onednn_linear_preferred()
    return ONEDNN_LINEAR and onednn_linear_works()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear(x, weight, bias) (+ residual, of the output's shape): through oneDNN on the CPU in fp32 or bf16
    without autograd (see ONEDNN_LINEAR), else F.linear."""
    if (x.device.type == "cpu" and x.dtype in ONEDNN_DTYPES and weight.dtype == x.dtype and x.dim() >= 2
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and onednn_linear_available()):
        if residual is not None and residual.shape == x.shape[:-1] + weight.shape[:1] and residual.dtype == x.dtype:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        out = onednn_linear(x, weight, bias)
    else:
        out = F.linear(x, weight, bias)
    return out if residual is None else out + residual


class Linear(nn.Linear):
    """nn.Linear (same parameters and keys) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


# Shape rules of the decoder's folds (core.decoding), shared with the benchmarks' operation counts.

def padded_width(n: int) -> int:
    """n rounded up to a multiple of WIDTH_MULTIPLE."""
    return -(-n // WIDTH_MULTIPLE) * WIDTH_MULTIPLE


def fold_pays(n_keys: int, wide: int, narrow: int, num_queries: Optional[int]) -> bool:
    """Whether multiplying a (wide x narrow) projection into L keys (or values) once costs fewer operations
    than applying it to every query: L*wide*narrow + Q*L*wide <= Q*wide*narrow + Q*L*narrow (Q = None: many
    queries, so only the per-query terms count)."""
    if num_queries is None:
        return n_keys * wide <= wide * narrow + n_keys * narrow
    return n_keys * wide * narrow + num_queries * n_keys * wide <= num_queries * (wide * narrow + n_keys * narrow)


def encoder_folds(num_heads: int, kv_dim: int, qk_channels: int, v_channels: int) -> tuple[bool, bool]:
    """Which exact folds an encoder cross-attention takes: (the key projection folded into the queries, the
    value and output projections applied after the weighted sum). Both need one head and narrow inputs."""
    folds_keys = num_heads == 1 and kv_dim <= qk_channels
    return folds_keys, folds_keys and kv_dim <= v_channels


class _Projections(nn.Module):
    """Pre-norms and q/k/v projections (key prefix `attention.self`)."""

    def __init__(self, q_dim: int, kv_dim: int, qk_channels: int, v_channels: int, cross: bool):
        super().__init__()
        self.layernorm1 = nn.LayerNorm(q_dim, eps=LAYER_NORM_EPS)
        if cross:
            self.layernorm2 = nn.LayerNorm(kv_dim, eps=LAYER_NORM_EPS)
        self.query = Linear(q_dim, qk_channels)
        self.key = Linear(kv_dim, qk_channels)
        self.value = Linear(kv_dim, v_channels)


class _OutputProjection(nn.Module):
    """Projection after attention (key prefix `attention.output`)."""

    def __init__(self, v_channels: int, out_channels: int):
        super().__init__()
        self.dense = Linear(v_channels, out_channels)


class _Attention(nn.Module):
    def __init__(self, q_dim: int, kv_dim: int, qk_channels: int, v_channels: int, out_channels: int, cross: bool):
        super().__init__()
        # `self.self` reproduces the checkpoint key `attention.self.*`.
        self.self = _Projections(q_dim, kv_dim, qk_channels, v_channels, cross)
        self.output = _OutputProjection(v_channels, out_channels)


class _MLP(nn.Module):
    def __init__(self, dim: int, widening_factor: int):
        super().__init__()
        self.dense1 = Linear(dim, dim * widening_factor)
        self.dense2 = Linear(dim * widening_factor, dim)


class AttentionLayer(nn.Module):
    """One Perceiver block: pre-norm (cross- or self-) attention, optional query residual, pre-norm MLP."""

    def __init__(
        self,
        q_dim: int,
        kv_dim: Optional[int] = None,
        qk_channels: Optional[int] = None,
        v_channels: Optional[int] = None,
        num_heads: int = 1,
        widening_factor: int = 1,
        query_residual: bool = True,
        cross: bool = False,
        gelu_approximate: str = "none",
        cross_shape: str = "kv",
    ):
        super().__init__()
        kv_dim = q_dim if kv_dim is None else kv_dim
        if qk_channels is None:
            qk_channels = kv_dim if (cross and cross_shape == "kv") else q_dim
        if v_channels is None:
            v_channels = qk_channels
        if qk_channels % num_heads or v_channels % num_heads:
            raise ValueError(f"channels ({qk_channels}, {v_channels}) not divisible by {num_heads} heads")
        out_channels = q_dim if cross else v_channels
        self.cross = cross
        self.num_heads = num_heads
        self.query_residual = query_residual
        self.gelu_approximate = gelu_approximate
        self.attention = _Attention(q_dim, kv_dim, qk_channels, v_channels, out_channels, cross)
        self.layernorm = nn.LayerNorm(q_dim, eps=LAYER_NORM_EPS)
        self.mlp = _MLP(q_dim, widening_factor)

    def forward(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None,
                kv_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: queries (B, Nq, q_dim); kv: cross-attention inputs (B, Nk, kv_dim); kv_mask: (B, Nk) bool, True
        where a key may be attended to -> (B, Nq, q_dim) for cross-attention, (B, Nq, v_channels) for self."""
        return self.feed_forward(self.attend(x, kv, kv_mask))

    def attend(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None,
               kv_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The attention half of the block, query residual included: (B, Nq, q_dim) -> (B, Nq, out)."""
        p = self.attention.self
        dense = self.attention.output.dense
        q_in = p.layernorm1(x)
        kv_in = p.layernorm2(kv) if self.cross else q_in
        q, k, v = self._heads(p.query(q_in)), self._heads(p.key(kv_in)), self._heads(p.value(kv_in))
        mask = None if kv_mask is None else kv_mask[:, None, None, :]
        if mask is None and not self.cross and q.shape[-1] != v.shape[-1]:
            # SDPA has no fused CPU kernel for unequal query and value widths; its generic path makes more
            # passes over the scores than these two products
            scores = torch.matmul(q * self._scale, k.transpose(-1, -2))
            attended = torch.matmul(torch.softmax(scores, dim=-1), v)
        else:
            attended = attention(q, k, v, mask)
        return linear(self._merge(attended), dense.weight, dense.bias, x if self.query_residual else None)

    def feed_forward(self, out: torch.Tensor) -> torch.Tensor:
        """The MLP half of the block: out + dense2(GELU(dense1(layernorm(out)))), the residual added in the
        last product."""
        hidden = F.gelu(self.mlp.dense1(self.layernorm(out)), approximate=self.gelu_approximate)
        return linear(hidden, self.mlp.dense2.weight, self.mlp.dense2.bias, residual=out)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, H, N, C/H)."""
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _merge(self, attended: torch.Tensor) -> torch.Tensor:
        """(B, H, N, C) -> (B, N, H*C)."""
        b, h, n, c = attended.shape
        return attended.transpose(1, 2).reshape(b, n, h * c)

    @property
    def _scale(self) -> float:
        """The scores' scale: one over the square root of a head's query/key width."""
        return self.attention.self.query.out_features ** -0.5 * self.num_heads ** 0.5


class EncoderCrossAttention(AttentionLayer):
    """The encoder's cross-attention (latents to inputs). With one head and inputs no wider than the keys, the
    key projection is applied to the few latent queries instead of the many inputs, and the value and output
    projections become one matrix applied after attention; otherwise it is the plain AttentionLayer."""

    def __init__(self, q_dim: int, kv_dim: int, **kwargs):
        super().__init__(q_dim, kv_dim, cross=True, **kwargs)

    @property
    def folds_keys(self) -> bool:
        """Whether attend folds the key projection into the queries."""
        p = self.attention.self
        return encoder_folds(self.num_heads, p.key.in_features, p.key.out_features, p.value.out_features)[0]

    def attend(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None,
               kv_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """AttentionLayer.attend, up to rounding."""
        if not self.folds_keys:
            return super().attend(x, kv, kv_mask)
        p = self.attention.self
        dense = self.attention.output.dense
        mask = None if kv_mask is None else kv_mask[:, None, None, :]
        kv_in = p.layernorm2(kv)[:, None]
        # q.(Wk k + bk) = (q Wk).k + q.bk, and q.bk adds the same to all of a query's scores: softmax ignores it
        q = (p.query(p.layernorm1(x)) @ p.key.weight)[:, None]
        if encoder_folds(self.num_heads, p.key.in_features, p.key.out_features, p.value.out_features)[1]:
            # softmax weights sum to one, so the value and output projections apply after the weighted sum
            attended = attention(q, kv_in, kv_in, mask, self._scale)
            out = attended[:, 0] @ (dense.weight @ p.value.weight).t() + (dense.weight @ p.value.bias + dense.bias)
        else:
            values = p.value(kv_in[:, 0])[:, None]
            attended = attention(q, kv_in, values, mask, self._scale)
            out = dense(attended[:, 0])
        if self.query_residual:
            out = out + x
        return out


class LatentEmbeddings(nn.Module):
    """The learned latent array (key `perceiver.embeddings.latents`)."""

    def __init__(self, num_latents: int, d_latents: int):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(num_latents, d_latents))


class Encoder(nn.Module):
    """Cross-attend latents to the inputs once, then blocks of latent self-attention (weights shared across blocks)."""

    def __init__(self, spec, kv_dim: int, gelu_approximate: str):
        super().__init__()
        self.num_blocks = spec.num_blocks
        self.cross_attention = EncoderCrossAttention(
            q_dim=spec.d_latents, kv_dim=kv_dim,
            qk_channels=spec.qk_channels, v_channels=spec.v_channels,
            num_heads=spec.num_cross_attention_heads, widening_factor=spec.cross_attention_widening_factor,
            query_residual=spec.use_query_residual, gelu_approximate=gelu_approximate,
            cross_shape=spec.cross_attention_shape_for_attention,
        )
        self.self_attends = nn.ModuleList(
            AttentionLayer(
                q_dim=spec.d_latents, qk_channels=spec.qk_channels, v_channels=spec.v_channels,
                num_heads=spec.num_self_attention_heads, widening_factor=spec.self_attention_widening_factor,
                query_residual=True, cross=False, gelu_approximate=gelu_approximate,
            )
            for _ in range(spec.num_self_attends_per_block)
        )

    def forward(self, latents: torch.Tensor, inputs: torch.Tensor,
                inputs_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """latents (B, L, D), inputs (B, N, C), inputs_mask (B, N) bool -> latents (B, L, D).

        Rows go through in passes (see in_passes), so the memory of the cross-attention's latent-sized
        temporaries does not grow with the batch either."""
        return in_passes(self._encode, latents.shape[1], latents, inputs, inputs_mask)

    def _encode(self, latents: torch.Tensor, inputs: torch.Tensor, inputs_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.process(self.cross_attention(latents, kv=inputs, kv_mask=inputs_mask))

    def process(self, z: torch.Tensor) -> torch.Tensor:
        """The latent self-attention stack alone, on one pass's rows (see in_passes): (B, L, D) -> (B, L, D)."""
        for _ in range(self.num_blocks):
            for layer in self.self_attends:
                z = layer(z)
        return z


def stack_rows(batch: int, num_latents: int, device: torch.device) -> int:
    """How many of `batch` rows of `num_latents` latents to run through the latent stack at once on `device`."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CPU_STACK_TOKENS // num_latents))


def in_passes(fn: Callable[..., torch.Tensor], num_latents: int, *rows: Optional[torch.Tensor]) -> torch.Tensor:
    """fn(*rows) for batch-first tensors whose rows are independent (None passes through), computed over
    slices of stack_rows rows and concatenated: on CPU, as many rows as the latent stack runs fastest with
    (CPU_STACK_TOKENS); elsewhere one call."""
    batch = rows[0].shape[0]
    step = stack_rows(batch, num_latents, rows[0].device)
    if step >= batch:
        return fn(*rows)
    return torch.cat([fn(*(None if t is None else t[i:i + step] for t in rows)) for i in range(0, batch, step)])
