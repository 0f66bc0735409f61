"""The decoder's cross-attention: many output queries against one input's few latents, and the algebraic folds
that make it cheap.

The latents' keys and values are computed once per input (a DecoderMemory) and serve every chunk of queries.
With one head, the memory may also carry folds, each equal to the plain AttentionLayer up to rounding:
- query projection folded into the keys (and its bias into a per-key score offset);
- output projection folded into the values;
- a constant query tail (a modality's padding channels) folded into two extra key channels;
- outputs zero-padded to a multiple of layers.WIDTH_MULTIPLE channels, with the MLP's weights padded to match;
- a narrow output head composed with the MLP's last projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from perceiver_cli.core.layers import AttentionLayer, attention, fold_pays, linear, padded_width


def decoder_folds(num_heads: int, n_keys: int, q_dim: int, qk_channels: int, v_channels: int, out_channels: int,
                  num_queries: Optional[int], query_tail: bool) -> tuple[bool, bool]:
    """Which exact folds a decoder cross-attention takes for `num_queries` queries (None: many): (the query
    projection folded into the keys, the output projection folded into the values). One head only; a
    constant query tail always folds the query projection."""
    if num_heads != 1:
        return False, False
    fold_q = query_tail or fold_pays(n_keys, q_dim, qk_channels, num_queries)
    return fold_q, fold_pays(n_keys, out_channels, v_channels, num_queries)


@dataclass
class DecoderMemory:
    """Per-input keys and values shared by all query chunks of a decoder, and how they were folded.

    With the query projection folded (fold_q): keys (B, L, C), or (B, C, L) when C differs from the values'
    width, values (B, L, V) and a per-key score offset `bias` (B, 1, L); otherwise keys and values by head
    (B, H, L, C). fold_o: the values are already through the output projection. query_tail: the constant last
    channels of every query, folded into the keys (queries are then passed without them). mlp: when the folded
    values are zero-padded to a multiple of WIDTH_MULTIPLE channels, the MLP's padded weights (dense1 weight and
    bias, dense2 weight and bias); the attention's outputs are then padded the same way.
    """

    keys: torch.Tensor
    values: torch.Tensor
    bias: Optional[torch.Tensor]
    fold_q: bool
    fold_o: bool
    query_tail: Optional[torch.Tensor] = None
    mlp: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = None


class DecoderAttention(AttentionLayer):
    """The decoder's cross-attention block (same parameters and keys as AttentionLayer): `memory` computes the
    latents' side once, `decode` runs a chunk of queries against it. Calling the layer is the plain path."""

    def __init__(self, q_dim: int, kv_dim: int, **kwargs):
        super().__init__(q_dim, kv_dim, cross=True, **kwargs)

    def memory(self, latents: torch.Tensor, query_tail: Optional[torch.Tensor] = None,
               num_queries: Optional[int] = None) -> DecoderMemory:
        """Keys and values of the latents (B, L, D), computed once for many query chunks.

        With one head, the query projection is folded into the keys, and the output projection into the
        values, whenever that costs fewer operations for the `num_queries` queries the memory will serve
        (None: many; see layers.fold_pays). `query_tail` (T,) declares that every query ends with these same
        T channels: decode then takes queries without them (this needs one head and no query residual).
        """
        p = self.attention.self
        dense = self.attention.output.dense
        kv_in = p.layernorm2(latents)
        keys, values = p.key(kv_in), p.value(kv_in)
        n_keys = keys.shape[1]
        one_head = self.num_heads == 1
        if query_tail is not None and (not one_head or self.query_residual):
            raise ValueError("a constant query tail needs one head and no query residual")
        fold_q, fold_o = decoder_folds(self.num_heads, n_keys, p.query.in_features, p.query.out_features,
                                       dense.in_features, dense.out_features, num_queries, query_tail is not None)
        bias = None
        if fold_q:
            keys, bias = self._fold_query(keys, query_tail)
        mlp = None
        if fold_o:
            # softmax weights sum to one, so the output bias rides along with the values
            values = values @ dense.weight.t() + dense.bias
            out_dim = dense.out_features
            query_width = keys.shape[-1] if fold_q else p.query.out_features
            # equal query and value widths keep SDPA's fused kernel, which beats padding
            if not self.query_residual and padded_width(out_dim) != out_dim and query_width != out_dim:
                mlp = self._padded_mlp()
                values = F.pad(values, (0, padded_width(out_dim) - out_dim))
        if not fold_q:
            return DecoderMemory(self._heads(keys), self._heads(values), None, fold_q, fold_o, None, mlp)
        if keys.shape[-1] != values.shape[-1]:
            # unequal widths: keys stored (B, C, L) for one baddbmm per chunk of queries (see _attend)
            keys = keys.transpose(1, 2).contiguous()
        return DecoderMemory(keys, values, bias, fold_q, fold_o, query_tail, mlp)

    def decode(self, queries: torch.Tensor, memory: DecoderMemory,
               head: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """The block's output (B, Q, q_dim) for queries (B, Q, q_dim), less the memory's query tail if it has
        one; with head = (weight, bias), that output's linear projection (B, Q, weight rows)."""
        out = self._attend(queries, memory)
        hidden = self._mlp_hidden(out, memory)
        w2, b2 = (self.mlp.dense2.weight, self.mlp.dense2.bias) if memory.mlp is None else memory.mlp[2:]
        width = self.layernorm.normalized_shape[0]  # out may be zero-padded beyond it
        if head is None:
            return linear(hidden, w2, b2, residual=out[..., :width])
        weight, bias = head
        if out.dtype in (torch.bfloat16, torch.float16):  # the output keeps fp32 precision: a head is a small product
            out, hidden, w2, b2, weight = (t.float() for t in (out, hidden, w2, b2, weight))
            bias = None if bias is None else bias.float()
        if weight.shape[0] >= weight.shape[1]:
            return linear(linear(hidden, w2, b2, residual=out[..., :width]), weight, bias)
        # A narrow head: (out + h W2^T + b2) W^T + b = out W^T + h (W W2)^T + (W b2 + b), so no product is as
        # wide as the block's output.
        bias = weight @ b2 if bias is None else bias + weight @ b2
        projected = linear(out, F.pad(weight, (0, out.shape[-1] - width)), bias)
        return linear(hidden, weight @ w2, None, residual=projected)

    def _fold_query(self, keys: torch.Tensor, query_tail: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (B, L, qk) with the query projection folded in -> (keys (B, L, q_dim or q_dim - T + 2),
        score offset (B, 1, L), already scaled)."""
        p = self.attention.self
        weight, offset = p.query.weight, p.query.bias
        if query_tail is not None:
            # With x = [h, tail] and LN(x) = (x - mu) / sigma * g + b, the tail's part of the projected query
            # is (1/sigma) (tail*g_t) W_t - (mu/sigma) g_t W_t + b_t W_t, so the effective query is
            # [LN part of h, 1/sigma, -mu/sigma] (see _tail_query) against keys [k W_h, k.(tail*g_t) W_t, k.g_t W_t].
            n_head = p.query.in_features - query_tail.shape[0]
            g_t, b_t = p.layernorm1.weight[n_head:], p.layernorm1.bias[n_head:]
            w_h, w_t = weight[:, :n_head], weight[:, n_head:]
            extra = torch.stack([(query_tail * g_t) @ w_t.t(), g_t @ w_t.t()], dim=1)  # (qk, 2)
            offset = offset + b_t @ w_t.t()
            weight = torch.cat([w_h, extra], dim=1)
        # q.k = x.(Wq^T k) + bq.k: a per-key score offset, added to the scaled scores
        return keys @ weight, (keys @ offset)[:, None, :] * self._scale

    def _padded_mlp(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The MLP's weights for outputs zero-padded to a multiple of WIDTH_MULTIPLE channels: dense1 with zero
        rows (its padded outputs are GELU(0) = 0), dense2 with zero columns."""
        dense1, dense2 = self.mlp.dense1, self.mlp.dense2
        extra = padded_width(dense1.out_features) - dense1.out_features
        return (F.pad(dense1.weight, (0, 0, 0, extra)), F.pad(dense1.bias, (0, extra)),
                F.pad(dense2.weight, (0, extra)), dense2.bias)

    def _tail_query(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """The effective query [LN part of head, 1/sigma, -mu/sigma] of queries [head, tail] (see _fold_query)."""
        ln = self.attention.self.layernorm1
        n_h, n_t = head.shape[-1], tail.shape[0]
        n = n_h + n_t
        # mean and variance of [head, tail] from those of the parts (one pass over the head)
        var_h, mean_h = torch.var_mean(head, dim=-1, correction=0)
        var_t, mean_t = torch.var_mean(tail, correction=0)
        mu = (n_h * mean_h + n_t * mean_t) / n
        var = (n_h * (var_h + (mean_h - mu) ** 2) + n_t * (var_t + (mean_t - mu) ** 2)) / n
        inv_sigma = torch.rsqrt(var + ln.eps)
        normed = (head - mu[..., None]) * inv_sigma[..., None] * ln.weight[:n_h] + ln.bias[:n_h]
        return torch.cat([normed, inv_sigma[..., None], (-mu * inv_sigma)[..., None]], dim=-1)

    def _attend(self, queries: torch.Tensor, memory: DecoderMemory) -> torch.Tensor:
        """The attention half of the block against a memory, query residual included: (B, Q, q_dim) ->
        (B, Q, q_dim), zero-padded when the memory is."""
        p = self.attention.self
        if not memory.fold_q:
            q = self._heads(p.query(p.layernorm1(queries)))
            attended = self._merge(attention(q, memory.keys, memory.values, scale=self._scale))
        else:
            if memory.query_tail is not None:
                q_in = self._tail_query(queries, memory.query_tail)
            else:
                q_in = p.layernorm1(queries)
            if memory.keys.shape[-1] == memory.values.shape[-1]:
                # SDPA's fused CPU kernel (equal widths), the per-key offset as its additive mask
                attended = attention(q_in[:, None], memory.keys[:, None], memory.values[:, None],
                                     memory.bias[:, None], self._scale)[:, 0]
            else:
                # unequal widths, where SDPA has no fused CPU kernel and its generic path takes more passes over
                # the scores: scale * q.k + offset in one baddbmm, then one softmax and one product
                scores = torch.baddbmm(memory.bias, q_in, memory.keys, alpha=self._scale)
                attended = torch.bmm(torch.softmax(scores, dim=-1), memory.values)
        out = attended if memory.fold_o else self.attention.output.dense(attended)
        if self.query_residual:
            out = out + queries
        return out

    def _mlp_hidden(self, out: torch.Tensor, memory: DecoderMemory) -> torch.Tensor:
        """GELU(dense1(layernorm(out))), zero-padded like `out` when the memory is."""
        if memory.mlp is None:
            return F.gelu(self.mlp.dense1(self.layernorm(out)), approximate=self.gelu_approximate)
        w1, b1 = memory.mlp[:2]
        normed = self.layernorm(out[..., :self.layernorm.normalized_shape[0]])
        return F.gelu(linear(normed, w1, b1), approximate=self.gelu_approximate)
