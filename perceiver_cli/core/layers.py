"""Attention layers of Perceiver IO. Module names mirror the hub checkpoints' state_dict keys.

Attention always goes through torch.nn.functional.scaled_dot_product_attention, so no full attention
matrix is ever built by our code.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_cli.core.spec import LAYER_NORM_EPS


class _Projections(nn.Module):
    """Pre-norms and q/k/v projections (key prefix `attention.self`)."""

    def __init__(self, q_dim: int, kv_dim: int, qk_channels: int, v_channels: int, cross: bool):
        super().__init__()
        self.layernorm1 = nn.LayerNorm(q_dim, eps=LAYER_NORM_EPS)
        if cross:
            self.layernorm2 = nn.LayerNorm(kv_dim, eps=LAYER_NORM_EPS)
        self.query = nn.Linear(q_dim, qk_channels)
        self.key = nn.Linear(kv_dim, qk_channels)
        self.value = nn.Linear(kv_dim, v_channels)


class _OutputProjection(nn.Module):
    """Projection after attention (key prefix `attention.output`)."""

    def __init__(self, v_channels: int, out_channels: int):
        super().__init__()
        self.dense = nn.Linear(v_channels, out_channels)


class _Attention(nn.Module):
    def __init__(self, q_dim: int, kv_dim: int, qk_channels: int, v_channels: int, out_channels: int, cross: bool):
        super().__init__()
        # `self.self` reproduces the checkpoint key `attention.self.*`.
        self.self = _Projections(q_dim, kv_dim, qk_channels, v_channels, cross)
        self.output = _OutputProjection(v_channels, out_channels)


class _MLP(nn.Module):
    def __init__(self, dim: int, widening_factor: int):
        super().__init__()
        self.dense1 = nn.Linear(dim, dim * widening_factor)
        self.dense2 = nn.Linear(dim * widening_factor, dim)


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

    def memory(self, kv: torch.Tensor, query_tail: Optional[torch.Tensor] = None) -> "DecoderMemory":
        """Keys and values of a small cross-attention input (the latents), computed once for many query chunks.

        With one head, the query projection is folded into the keys, and the output projection into the
        values, whenever that costs fewer operations per query (L keys: L*q <= q*qk + L*qk, and likewise for
        the output): scores and outputs are the same up to rounding.

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
        fold_q = one_head and (query_tail is not None or n_keys * q_dim <= q_dim * qk + n_keys * qk)
        fold_o = one_head and n_keys * out_dim <= n_keys * v_dim + v_dim * out_dim
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
            # q.k = x.(Wq^T k) + bq.k: a per-key score offset (SDPA adds masks after scaling, so scale it here)
            bias = (k @ offset)[:, None, None, :] * self._scale
            k = k @ weight
        if fold_o:
            v = v @ dense.weight.t()
        return DecoderMemory(self._heads(k), self._heads(v), bias, fold_q, fold_o, query_tail)

    def _tail_query(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """The effective query [LN part of head, 1/sigma, -mu/sigma] of queries [head, tail] (see memory)."""
        ln = self.attention.self.layernorm1
        n = head.shape[-1] + tail.shape[0]
        mu = (head.sum(-1) + tail.sum()) / n
        var = (((head - mu[..., None]) ** 2).sum(-1) + ((tail - mu[..., None]) ** 2).sum(-1)) / n
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
        if memory is not None:
            q = q_in[:, None] if memory.fold_q else self._heads(p.query(q_in))
            attended = F.scaled_dot_product_attention(q, memory.keys, memory.values, attn_mask=memory.bias,
                                                      scale=self._scale)
            out = attended[:, 0] + dense.bias if memory.fold_o else dense(self._merge(attended))
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
            k, v = self._heads(p.key(kv_in)), self._heads(p.value(kv_in))
            attended = F.scaled_dot_product_attention(self._heads(p.query(q_in)), k, v, attn_mask=mask)
            out = dense(self._merge(attended))
        if self.query_residual:
            out = out + x
        return out

    def mlp_hidden(self, out: torch.Tensor) -> torch.Tensor:
        """GELU(dense1(layernorm(out))): the MLP before its last projection."""
        return F.gelu(self.mlp.dense1(self.layernorm(out)), approximate=self.gelu_approximate)

    def forward(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None, kv_mask: Optional[torch.Tensor] = None,
                memory: Optional["DecoderMemory"] = None) -> torch.Tensor:
        """x: queries (B, Nq, q_dim); kv: cross-attention inputs (B, Nk, kv_dim), or a precomputed memory;
        kv_mask: (B, Nk) bool, True where a key may be attended to."""
        out = self.attend(x, kv, kv_mask, memory)
        return out + self.mlp.dense2(self.mlp_hidden(out))


class DecoderMemory:
    """Per-input keys/values (B, H, L, C) shared by all query chunks of a decoder, and how they were folded."""

    def __init__(self, keys, values, bias, fold_q: bool, fold_o: bool, query_tail=None):
        self.keys, self.values, self.bias, self.fold_q, self.fold_o = keys, values, bias, fold_q, fold_o
        self.query_tail = query_tail


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
        """latents (B, L, D), inputs (B, N, C), inputs_mask (B, N) bool -> latents (B, L, D)."""
        return self.process(self.cross_attention(latents, kv=inputs, kv_mask=inputs_mask))

    def process(self, z: torch.Tensor) -> torch.Tensor:
        """The latent self-attention stack alone: (B, L, D) -> (B, L, D)."""
        for _ in range(self.num_blocks):
            for layer in self.self_attends:
                z = layer(z)
        return z
