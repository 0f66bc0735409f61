"""Attention layers of Perceiver IO. Module names mirror the hub checkpoints' state_dict keys.

Attention goes through torch.nn.functional.scaled_dot_product_attention wherever its fused kernel applies.
Where it does not (query/key heads narrower than value heads: the language model's self-attention, 32 vs 160
channels, and the multimodal decoder's folded queries, 197 vs 1032), CPU SDPA falls back to a generic path
with extra passes over the scores, so those layers multiply out the scores themselves: latents x latents for
self-attention, one decoder chunk x latents for decoders.
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

# Latent tokens per pass through the self-attention stack on CPU. Measured on a 2-core EPYC (fp32, 2
# threads): the stack runs fastest with about 1,024 latent tokens per pass (4 texts of the language
# model's 256 latents, 2 images of the vision models' 512); larger passes spill the activations out of the
# cache (32 texts at once ran 15% slower), smaller ones give the matrix products too few rows.
CPU_STACK_TOKENS = 1024

# Matrix products whose output width is not a multiple of 8 ran about 25% slower here (1026 wide: 130
# GFLOP/s, 1032 wide: 190); decoders whose outputs are 1026 (multimodal) or 322 (flow) channels wide compute
# them zero-padded to the next multiple (see AttentionLayer.memory).
WIDTH_MULTIPLE = 8

# fp32 dense layers on the CPU can go through oneDNN's matrix product (torch.ops.mkldnn._linear_pointwise,
# the op torch's own compiler emits for linear layers) instead of the BLAS behind F.linear (MKL in the x86
# wheels). Which is faster depends on the CPU: on the 2-core AMD EPYC of our earlier benchmark runs, oneDNN
# ran 196-207 GFLOP/s where F.linear ran 177-189 (1024 x 1024 x 1024 products); on a 2-core AMD EPYC whose
# torch runs AVX2 kernels only, oneDNN ran 121-150 where F.linear ran 145-183. The first machine's kernel
# level was not recorded; oneDNN picks its kernels from the CPU's features, while MKL on AMD processors keeps
# to its AVX2 kernels, so oneDNN is the default only where torch reports AVX-512. Both accumulate in fp32
# (errors against float64 of the same order); the `binary` form adds a residual in the same pass.
# ONEDNN_LINEAR: None = decide on first use, which build_model makes happen before any input is read (the
# environment variable PERCEIVER_CLI_CPU_MATMUL=onednn|blas overrides the CPU check; any other value is a
# usage error); True = oneDNN wherever the op works; False = F.linear everywhere.
ONEDNN_LINEAR: Optional[bool] = None
MATMUL_ENV = "PERCEIVER_CLI_CPU_MATMUL"
_ONEDNN_WORKS: Optional[bool] = None


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
    """F.linear(x, weight, bias) (+ residual, of the output's shape): through oneDNN on the CPU in fp32
    without autograd (see ONEDNN_LINEAR), else F.linear."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() >= 2
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

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _merge(self, attended: torch.Tensor) -> torch.Tensor:
        b, h, n, c = attended.shape
        return attended.transpose(1, 2).reshape(b, n, h * c)

    @property
    def _scale(self) -> float:
        return self.attention.self.query.out_features ** -0.5 * self.num_heads ** 0.5

    def memory(self, kv: torch.Tensor, query_tail: Optional[torch.Tensor] = None,
               num_queries: Optional[int] = None) -> "DecoderMemory":
        """Keys and values of a small cross-attention input (the latents), computed once for many query chunks.

        With one head, the query projection is folded into the keys, and the output projection into the
        values, whenever that costs fewer operations for the `num_queries` queries the memory will serve
        (None: many): with L keys and Q queries, folding the query projection costs L*q*qk once plus Q*L*q,
        against Q*q*qk + Q*L*qk unfolded, and likewise for the output. Scores and outputs are the same up to
        rounding.

        `query_tail` (T,) declares that every query ends with these same T channels (a modality's padding):
        then queries are passed without them, and their share of the layer norm and of the query projection
        is folded into two extra key channels and a per-key score offset.
        """
        p = self.attention.self
        dense = self.attention.output.dense
        kv_in = p.layernorm2(kv)
        k, v = p.key(kv_in), p.value(kv_in)
        n_keys, q_dim, qk = k.shape[1], p.query.in_features, p.query.out_features
        out_dim, v_dim = dense.out_features, p.value.out_features
        one_head = self.num_heads == 1
        fold_q = one_head and (query_tail is not None or fold_pays(n_keys, q_dim, qk, num_queries))
        fold_o = one_head and fold_pays(n_keys, out_dim, v_dim, num_queries)
        if query_tail is not None and (not one_head or self.query_residual):
            raise ValueError("a constant query tail needs one head and no query residual")
        bias = None
        if fold_q:
            weight, offset = p.query.weight, p.query.bias
            if query_tail is not None:
                # With x = [h, tail] and LN(x) = (x - mu) / sigma * g + b, the tail's part of the projected
                # query is (1/sigma) (tail*g_t) W_t - (mu/sigma) g_t W_t + b_t W_t, so the effective query is
                # [LN part of h, 1/sigma, -mu/sigma] against keys [k W_h, k.(tail*g_t) W_t, k.g_t W_t].
                n_head = q_dim - query_tail.shape[0]
                g_t, b_t = p.layernorm1.weight[n_head:], p.layernorm1.bias[n_head:]
                w_h, w_t = weight[:, :n_head], weight[:, n_head:]
                extra = torch.stack([(query_tail * g_t) @ w_t.t(), g_t @ w_t.t()], dim=1)  # (qk, 2)
                offset = offset + b_t @ w_t.t()
                weight = torch.cat([w_h, extra], dim=1)
            # q.k = x.(Wq^T k) + bq.k: a per-key score offset, added to the scaled scores
            bias = (k @ offset)[:, None, :] * self._scale
            k = k @ weight
        mlp = None
        if fold_o:
            # softmax weights sum to one, so the output bias rides along with the values
            v = v @ dense.weight.t() + dense.bias
            q_width = k.shape[-1] if fold_q else qk
            # (equal query and value widths keep SDPA's fused kernel, which beats padding: flow's decoder)
            if not self.query_residual and out_dim % WIDTH_MULTIPLE and q_width != out_dim:
                mlp = self._padded_mlp()
                v = F.pad(v, (0, _round_up(out_dim) - out_dim))
        if not fold_q:
            return DecoderMemory(self._heads(k), self._heads(v), None, fold_q, fold_o, query_tail, mlp)
        if k.shape[-1] != v.shape[-1]:
            # unequal widths: keys stored transposed (B, C, L) for one baddbmm per chunk of queries (see attend)
            k = k.transpose(1, 2).contiguous()
        return DecoderMemory(k, v, bias, fold_q, fold_o, query_tail, mlp)

    def _padded_mlp(self) -> tuple[torch.Tensor, ...]:
        """The MLP's weights for outputs zero-padded to a multiple of WIDTH_MULTIPLE channels:
        dense1 with zero rows (its padded outputs are GELU(0) = 0), dense2 with zero columns."""
        dense1, dense2 = self.mlp.dense1, self.mlp.dense2
        extra = _round_up(dense1.out_features) - dense1.out_features
        return (F.pad(dense1.weight, (0, 0, 0, extra)), F.pad(dense1.bias, (0, extra)),
                F.pad(dense2.weight, (0, extra)), dense2.bias)

    def _tail_query(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """The effective query [LN part of head, 1/sigma, -mu/sigma] of queries [head, tail] (see memory)."""
        ln = self.attention.self.layernorm1
        n_h, n_t = head.shape[-1], tail.shape[0]
        n = n_h + n_t
        # mean and variance of [head, tail] from those of the parts (one pass over the head)
        var_h, mean_h = torch.var_mean(head, dim=-1, correction=0)
        var_t, mean_t = torch.var_mean(tail, correction=0)
        mu = (n_h * mean_h + n_t * mean_t) / n
        var = (n_h * (var_h + (mean_h - mu) ** 2) + n_t * (var_t + (mean_t - mu) ** 2)) / n
        inv_sigma = torch.rsqrt(var + ln.eps)
        normed = (head - mu[..., None]) * inv_sigma[..., None] * ln.weight[: head.shape[-1]] + ln.bias[: head.shape[-1]]
        return torch.cat([normed, inv_sigma[..., None], (-mu * inv_sigma)[..., None]], dim=-1)

    def attend(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None, kv_mask: Optional[torch.Tensor] = None,
               memory: Optional["DecoderMemory"] = None) -> torch.Tensor:
        """The attention half of the block (with the query residual): (B, Nq, q_dim) -> (B, Nq, out)."""
        p = self.attention.self
        dense = self.attention.output.dense
        mask = None if kv_mask is None else kv_mask[:, None, None, :]
        if memory is not None and memory.query_tail is not None:
            q_in = self._tail_query(x, memory.query_tail)
        else:
            q_in = p.layernorm1(x)
        if memory is not None and memory.fold_q:
            if memory.keys.shape[-1] == memory.values.shape[-1]:
                # SDPA's fused CPU kernel (equal widths), the per-key offset as its additive mask
                attended = F.scaled_dot_product_attention(q_in[:, None], memory.keys[:, None], memory.values[:, None],
                                                          attn_mask=memory.bias[:, None], scale=self._scale)[:, 0]
            else:
                # Widths differ (the multimodal decoder: 197 vs 1032), where SDPA has no fused CPU kernel
                # and its generic path takes several more passes over the scores: scale * q.k + offset in
                # one baddbmm, then one softmax and one product.
                scores = torch.baddbmm(memory.bias, q_in, memory.keys, alpha=self._scale)
                attended = torch.bmm(torch.softmax(scores, dim=-1), memory.values)
            out = attended if memory.fold_o else dense(attended)
        elif memory is not None:
            attended = F.scaled_dot_product_attention(self._heads(p.query(q_in)), memory.keys, memory.values,
                                                      scale=self._scale)
            out = attended[:, 0] if memory.fold_o else dense(self._merge(attended))
        elif self.cross and self.num_heads == 1 and p.key.in_features <= p.key.out_features:
            # Few queries (latents) against many inputs no wider than the keys: fold the key projection into the queries
            # (the key bias adds the same amount to all scores of a query, which softmax ignores) and the
            # value and output projections into one matrix applied after attention (weights sum to one).
            kv_in = p.layernorm2(kv)[:, None]
            q = (p.query(q_in) @ p.key.weight)[:, None]
            if p.value.in_features <= p.value.out_features:
                attended = F.scaled_dot_product_attention(q, kv_in, kv_in, attn_mask=mask, scale=self._scale)
                out = attended[:, 0] @ (dense.weight @ p.value.weight).t() + (dense.weight @ p.value.bias + dense.bias)
            else:
                values = self._heads(p.value(kv_in[:, 0]))
                attended = F.scaled_dot_product_attention(q, kv_in, values, attn_mask=mask, scale=self._scale)
                out = dense(self._merge(attended))
        else:
            kv_in = p.layernorm2(kv) if self.cross else q_in
            q, k, v = self._heads(p.query(q_in)), self._heads(p.key(kv_in)), self._heads(p.value(kv_in))
            if mask is None and not self.cross and q.shape[-1] != v.shape[-1]:
                scores = torch.matmul(q * self._scale, k.transpose(-1, -2))
                attended = torch.matmul(torch.softmax(scores, dim=-1), v)
            else:
                attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return linear(self._merge(attended), dense.weight, dense.bias, x if self.query_residual else None)
        if self.query_residual:
            out = out + x
        return out

    def mlp_hidden(self, out: torch.Tensor, memory: Optional["DecoderMemory"] = None) -> torch.Tensor:
        """GELU(dense1(layernorm(out))): the MLP before its last projection. With a padded memory, `out` is
        zero-padded (see memory) and so is the result."""
        if memory is None or memory.mlp is None:
            return F.gelu(self.mlp.dense1(self.layernorm(out)), approximate=self.gelu_approximate)
        w1, b1 = memory.mlp[:2]
        normed = self.layernorm(out[..., :self.layernorm.normalized_shape[0]])
        return F.gelu(linear(normed, w1, b1), approximate=self.gelu_approximate)

    def mlp_output(self, hidden: torch.Tensor, memory: Optional["DecoderMemory"] = None,
                   residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The MLP's last projection of mlp_hidden's result (+ residual, added in the same pass)."""
        dense2 = self.mlp.dense2
        weight, bias = (dense2.weight, dense2.bias) if memory is None or memory.mlp is None else memory.mlp[2:]
        return linear(hidden, weight, bias, residual)

    def forward(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None, kv_mask: Optional[torch.Tensor] = None,
                memory: Optional["DecoderMemory"] = None) -> torch.Tensor:
        """x: queries (B, Nq, q_dim); kv: cross-attention inputs (B, Nk, kv_dim), or a precomputed memory;
        kv_mask: (B, Nk) bool, True where a key may be attended to."""
        out = self.attend(x, kv, kv_mask, memory)
        return self.mlp_output(self.mlp_hidden(out), residual=out)


def _round_up(n: int) -> int:
    return -(-n // WIDTH_MULTIPLE) * WIDTH_MULTIPLE


def fold_pays(n_keys: int, wide: int, narrow: int, num_queries: Optional[int]) -> bool:
    """Whether multiplying a (wide x narrow) projection into L keys (or values) once costs fewer operations
    than applying it to every query: L*wide*narrow + Q*L*wide <= Q*wide*narrow + Q*L*narrow (Q = None: many
    queries, so only the per-query terms count)."""
    if num_queries is None:
        return n_keys * wide <= wide * narrow + n_keys * narrow
    return n_keys * wide * narrow + num_queries * n_keys * wide <= num_queries * (wide * narrow + n_keys * narrow)


class DecoderMemory:
    """Per-input keys and values shared by all query chunks of a decoder, and how they were folded: with the
    query projection folded (one head), values (B, L, V), a per-key score offset bias (B, 1, L) and keys
    (B, L, C), or (B, C, L) when C != V; otherwise keys and values by head (B, H, L, C). `mlp`: when the
    folded values are zero-padded to a multiple of WIDTH_MULTIPLE channels, the MLP's padded weights (dense1
    weight and bias, dense2 weight and bias); the attention's outputs are then padded the same way."""

    def __init__(self, keys, values, bias, fold_q: bool, fold_o: bool, query_tail=None, mlp=None):
        self.keys, self.values, self.bias, self.fold_q, self.fold_o = keys, values, bias, fold_q, fold_o
        self.query_tail, self.mlp = query_tail, mlp


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
        self.cross_attention = AttentionLayer(
            q_dim=spec.d_latents, kv_dim=kv_dim,
            qk_channels=spec.qk_channels, v_channels=spec.v_channels,
            num_heads=spec.num_cross_attention_heads, widening_factor=spec.cross_attention_widening_factor,
            query_residual=spec.use_query_residual, cross=True, gelu_approximate=gelu_approximate,
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
