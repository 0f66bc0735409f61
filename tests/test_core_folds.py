"""Each algebraic fold of the encoder's and decoder's cross-attention equals the plain AttentionLayer (same
weights, loaded by name) on random weights and inputs; each test also checks that its fold was taken."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perceiver_cli.core.decoding import DecoderAttention
from perceiver_cli.core.layers import AttentionLayer, EncoderCrossAttention, Linear
from perceiver_cli.core.trunk import QueryDecoder
from tiny_models import randomise

# float64 shows the algebra exact up to rounding; float32 is what the models run (oneDNN or BLAS products)
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])


def _random(layer: torch.nn.Module, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    randomise(layer, seed)
    return layer.to(dtype).eval()


def _plain(layer: AttentionLayer, q_dim: int, kv_dim: int, **kwargs) -> AttentionLayer:
    """A plain cross-attention AttentionLayer with `layer`'s weights (strict load: the same keys)."""
    plain = AttentionLayer(q_dim, kv_dim, cross=True, **kwargs).to(layer.layernorm.weight.dtype).eval()
    plain.load_state_dict(layer.state_dict(), strict=True)
    return plain


def _close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * expected.abs().max().item())


def _inputs(dtype: torch.dtype, *shapes: tuple[int, ...], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g).to(dtype) for shape in shapes]


# ---------------------------------------------------------------------------------------------------------
# encoder: key projection folded into the latent queries, value and output projections into one matrix

ENCODER_CASES = {
    # inputs as wide as keys and values: both folds
    "key and value-output folds": dict(kv_dim=12),
    # values narrower than the inputs: the key fold alone
    "key fold alone": dict(kv_dim=12, qk_channels=32, v_channels=8),
    "key and value-output folds, no query residual": dict(kv_dim=12, query_residual=False),
}


@DTYPES
@pytest.mark.parametrize("case", sorted(ENCODER_CASES))
@torch.no_grad()
def test_encoder_cross_attention_folds_equal_the_plain_layer(case, dtype):
    kwargs = dict(ENCODER_CASES[case])
    kv_dim = kwargs.pop("kv_dim")
    layer = _random(EncoderCrossAttention(32, kv_dim, **kwargs), dtype)
    assert layer.folds_keys
    plain = _plain(layer, 32, kv_dim, **kwargs)
    latents, inputs = _inputs(dtype, (2, 8, 32), (2, 50, kv_dim))
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 30:] = False  # a padded row: its masked inputs must be ignored by the folded path too
    _close(layer(latents, kv=inputs, kv_mask=mask), plain(latents, kv=inputs, kv_mask=mask), dtype)
    _close(layer(latents, kv=inputs), plain(latents, kv=inputs), dtype)


@pytest.mark.parametrize("kwargs", [dict(kv_dim=12, num_heads=2), dict(kv_dim=40)], ids=["two heads", "wide inputs"])
def test_encoder_cross_attention_does_not_fold_several_heads_or_inputs_wider_than_keys(kwargs):
    kwargs = dict(kwargs)
    layer = EncoderCrossAttention(32, kwargs.pop("kv_dim"), qk_channels=16, v_channels=16, **kwargs)
    assert not layer.folds_keys


# ---------------------------------------------------------------------------------------------------------
# decoder: a memory of the latents with the query and output projections, a constant query tail and
# padded outputs folded in

DECODER_CASES = {
    # keys (query-folded) and values (output-folded) both 40 wide: SDPA's fused kernel with a score offset
    "query and output folds": dict(q_dim=40, kv_dim=24, latents=16),
    "query and output folds with the query residual": dict(q_dim=40, kv_dim=24, latents=16, query_residual=True),
    # many latents, narrow values: folding the output projection does not pay; keys 40 vs values 8 wide
    "query fold alone": dict(q_dim=40, kv_dim=24, latents=64, qk_channels=64, v_channels=8),
    # narrow keys: folding the query projection does not pay; the 42 folded output channels padded to 48
    "output fold padded": dict(q_dim=42, kv_dim=24, latents=16, qk_channels=2, v_channels=64),
    # queries ending in 10 constant channels: those folded into two key channels; outputs padded to 48
    "constant query tail, padded": dict(q_dim=42, kv_dim=24, latents=16, tail=10),
    "several heads: no folds": dict(q_dim=40, kv_dim=24, latents=16, qk_channels=16, v_channels=32, num_heads=4),
}


def _expected_memory(case: str, memory) -> None:
    """The folds each case is meant to take."""
    fold_q = case.startswith(("query", "constant"))
    fold_o = "output" in case or case.startswith("constant")
    assert (memory.fold_q, memory.fold_o) == (fold_q, fold_o)
    assert (memory.mlp is not None) == case.endswith("padded")
    if memory.mlp is not None:
        assert memory.values.shape[-1] == 48
    assert (memory.query_tail is not None) == case.startswith("constant")


def _decoder_case(case: str, dtype: torch.dtype):
    kwargs = dict(DECODER_CASES[case])
    q_dim, kv_dim, n_latents, n_tail = kwargs.pop("q_dim"), kwargs.pop("kv_dim"), kwargs.pop("latents"), \
        kwargs.pop("tail", 0)
    kwargs.setdefault("query_residual", False)
    layer = _random(DecoderAttention(q_dim, kv_dim, gelu_approximate="tanh", **kwargs), dtype)
    plain = _plain(layer, q_dim, kv_dim, gelu_approximate="tanh", **kwargs)
    queries, latents, tail = _inputs(dtype, (2, 30, q_dim), (2, n_latents, kv_dim), (n_tail,))
    if n_tail:
        queries[..., q_dim - n_tail:] = tail
    memory = layer.memory(latents, query_tail=tail if n_tail else None)
    _expected_memory(case, memory)
    # with a tail, decode takes the queries without it
    return layer, plain, queries, latents, memory, queries[..., :q_dim - n_tail]


@DTYPES
@pytest.mark.parametrize("case", sorted(DECODER_CASES))
@torch.no_grad()
def test_decoder_folds_equal_the_plain_layer(case, dtype):
    layer, plain, queries, latents, memory, decoded_queries = _decoder_case(case, dtype)
    expected = plain(queries, kv=latents)
    _close(layer.decode(decoded_queries, memory), expected, dtype)
    # the plain path of the decoder's own layer is the oracle's
    _close(layer(queries, kv=latents), expected, dtype)


@DTYPES
@pytest.mark.parametrize("rows", [2, 3, 60], ids=["narrow head", "RGB head", "wide head"])
@pytest.mark.parametrize("case", ["constant query tail, padded", "output fold padded", "query and output folds",
                                  "several heads: no folds"])
@torch.no_grad()
def test_decoder_output_head_composed_with_the_mlp_equals_head_after_the_block(case, rows, dtype):
    # A head narrower than the block's output is multiplied into the MLP's last projection instead.
    layer, plain, queries, latents, memory, decoded_queries = _decoder_case(case, dtype)
    weight, bias = _inputs(dtype, (rows, queries.shape[-1]), (rows,), seed=2)
    expected = F.linear(plain(queries, kv=latents), weight, bias)
    _close(layer.decode(decoded_queries, memory, head=(weight, bias)), expected, dtype)
    _close(layer.decode(decoded_queries, memory, head=(weight, None)), F.linear(plain(queries, kv=latents), weight),
           dtype)


@pytest.mark.parametrize("num_queries, folds", [(1, False), (1000, True), (None, True)])
def test_decoder_folds_projections_only_for_enough_queries(num_queries, folds):
    # Folding a 40 x 24 projection into 16 latent keys is a product of its own: worth it for many queries only.
    layer = _random(DecoderAttention(40, 24, query_residual=False), torch.float64)
    memory = layer.memory(torch.randn(1, 16, 24, dtype=torch.float64), num_queries=num_queries)
    assert memory.fold_q is folds and memory.fold_o is folds


def test_decoder_refuses_a_query_tail_with_several_heads_or_a_query_residual():
    latents, tail = torch.randn(1, 16, 24), torch.randn(4)
    for layer in (DecoderAttention(40, 24, qk_channels=16, v_channels=16, num_heads=2, query_residual=False),
                  DecoderAttention(40, 24, query_residual=True)):
        with pytest.raises(ValueError, match="constant query tail"):
            layer.memory(latents, query_tail=tail)


@DTYPES
@pytest.mark.parametrize("out_channels", [2, 60])
@torch.no_grad()
def test_query_decoder_with_an_output_adapter_equals_the_layers_one_after_another(out_channels, dtype):
    decoder = _random(QueryDecoder(40, 24, out_channels, gelu_approximate="tanh"), dtype)
    post = _random(Linear(out_channels, 3), dtype, seed=3)
    plain = _plain(decoder.decoding_cross_attention, 40, 24, query_residual=False, gelu_approximate="tanh")
    queries, latents = _inputs(dtype, (2, 30, 40), (2, 16, 24))
    block = plain(queries, kv=latents)
    _close(decoder(queries, latents), decoder.final_layer(block), dtype)
    _close(decoder(queries, latents, post=post), post(decoder.final_layer(block)), dtype)
    memory = decoder.memory(latents, num_queries=30)
    assert memory.fold_q and memory.fold_o
    _close(decoder(queries[:, :7], memory=memory, post=post), post(decoder.final_layer(block[:, :7])), dtype)
