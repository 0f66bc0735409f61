"""Parity with transformers (--numerics transformers) for all six classes, on tiny random checkpoints.

Our models run on the test session's --device (see conftest.py); transformers, the oracle, on the CPU."""

from __future__ import annotations

import pytest
import torch

from perceiver_cli.load import load_model
from perceiver_cli.core.autoencode import decode_clip
from tiny_models import make_tiny_checkpoint

TOL = 1e-4


def _load(tmp_path, kind, device, numerics="transformers", **overrides):
    hf = make_tiny_checkpoint(kind, tmp_path / kind, **overrides)
    ours = load_model(str(tmp_path / kind), device=device, numerics=numerics)
    return hf, ours


def _on(model, *tensors):
    """The tensors moved to the device of `model`'s parameters."""
    where = next(model.parameters()).device
    moved = tuple(t.to(where) for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape
    diff = (a.detach().cpu() - b.detach().cpu()).abs().max().item()
    assert diff <= tol, f"max abs difference {diff}"


@torch.no_grad()
def test_language_logits_equal_transformers(tmp_path, device):
    hf, ours = _load(tmp_path, "language", device)
    ids = torch.randint(6, 262, (2, 40))
    ids[:, 10:15] = 3
    expected = hf(inputs=ids).logits[:, :40]
    _close(ours(_on(ours, ids)), expected)


@torch.no_grad()
def test_language_padding_mask_equals_transformers(tmp_path, device):
    hf, ours = _load(tmp_path, "language", device)
    ids = torch.randint(6, 262, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, 20:] = 0
    expected = hf(inputs=ids, attention_mask=mask).logits[:, :30]
    _close(ours(_on(ours, ids), attention_mask=_on(ours, mask)), expected)


@torch.no_grad()
def test_language_decodes_only_requested_positions_exactly(tmp_path, device):
    hf, ours = _load(tmp_path, "language", device)
    ids = torch.randint(6, 262, (1, 50))
    positions = torch.tensor([3, 17, 49])
    full = hf(inputs=ids).logits
    _close(ours(_on(ours, ids), positions=_on(ours, positions)), full[:, positions])


@torch.no_grad()
def test_unpadded_encoder_equals_padded_to_full_length(tmp_path, device):
    # Only the real bytes go through our encoder; transformers pads to the model length with a mask.
    hf, ours = _load(tmp_path, "language", device)
    ids = torch.randint(6, 262, (1, 20))
    padded = torch.zeros(1, 64, dtype=torch.long)
    padded[:, :20] = ids
    mask = torch.zeros(1, 64, dtype=torch.long)
    mask[:, :20] = 1
    expected = hf(inputs=padded, attention_mask=mask).logits[:, :20]
    _close(ours(_on(ours, ids)), expected)


@pytest.mark.parametrize("kind,size", [("vision-learned", 16), ("vision-fourier", 16), ("vision-conv", 32)])
@torch.no_grad()
def test_image_classifier_logits_equal_transformers(tmp_path, kind, size, device):
    hf, ours = _load(tmp_path, kind, device)
    pixels = torch.randn(2, 3, size, size)
    _close(ours(_on(ours, pixels)), hf(inputs=pixels).logits)


@torch.no_grad()
def test_flow_equals_transformers(tmp_path, device):
    hf, ours = _load(tmp_path, "flow", device)
    patches = torch.rand(2, 2, 27, 8, 12) * 2 - 1
    _close(ours(_on(ours, patches)), hf(inputs=patches).logits)


@torch.no_grad()
def test_flow_chunked_decoding_equals_unchunked(tmp_path, device):
    _, ours = _load(tmp_path, "flow", device)
    patches = torch.rand(1, 2, 27, 8, 12) * 2 - 1
    patches = _on(ours, patches)
    _close(ours(patches, chunk_size=7), ours(patches, chunk_size=10_000), 1e-5)


def _multimodal_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 2, 3, 16, 16, generator=g)
    audio = torch.rand(1, 64, 1, generator=g) * 2 - 1
    return images, audio


@torch.no_grad()
def test_multimodal_outputs_equal_transformers(tmp_path, device):
    hf, ours = _load(tmp_path, "multimodal", device)
    images, audio = _multimodal_inputs()
    label = torch.zeros(1, 10)
    image_idx = torch.arange(0, 2 * 16 * 16)
    audio_idx = torch.arange(0, 4)
    out = hf(inputs={"image": images, "audio": audio, "label": label},
             subsampled_output_points={"image": image_idx, "audio": audio_idx, "label": None}).logits
    z = ours.encode(*_on(ours, images, audio[..., 0]))
    # the decoder's 387 output channels are computed zero-padded to 392 (layers.WIDTH_MULTIPLE)
    memory = ours.memory(z, "image")
    assert memory.values.shape[-1] == 392 and memory.mlp is not None
    mine = decode_clip(ours, z, chunk_size=100)
    _close(mine["video"].reshape(1, -1, 3), out["image"])
    _close(mine["audio"], out["audio"])
    _close(mine["label"], out["label"])


@torch.no_grad()
def test_multimodal_chunked_equals_unchunked_and_label_ignores_label_input(tmp_path, device):
    hf, ours = _load(tmp_path, "multimodal", device)
    images, audio = _multimodal_inputs(1)
    z = ours.encode(*_on(ours, images, audio[..., 0]))
    a = decode_clip(ours, z, chunk_size=37)
    b = decode_clip(ours, z, chunk_size=100_000)
    for key in a:
        _close(a[key], b[key], 1e-5)
    # transformers with a one-hot label gives the same label logits: the label token is always masked
    onehot = torch.nn.functional.one_hot(torch.tensor([3]), 10).float()
    out = hf(inputs={"image": images, "audio": audio, "label": onehot},
             subsampled_output_points={"image": torch.arange(4), "audio": torch.arange(2), "label": None}).logits
    _close(a["label"], out["label"])


@torch.no_grad()
def test_flow_with_folded_projections_equals_transformers(tmp_path, device):
    # Latents wider than the 322 input channels: the encoder folds its key and value projections and the
    # decoder folds its query and output projections (see AttentionLayer); results must not change.
    hf, ours = _load(tmp_path, "flow", device, d_latents=512, qk_channels=512, v_channels=512)
    enc = ours.perceiver.encoder.cross_attention.attention.self
    assert enc.key.in_features < enc.key.out_features and enc.value.in_features < enc.value.out_features
    memory = ours.perceiver.decoder.decoder.memory(_on(ours, torch.zeros(1, 16, 512)))
    assert memory.fold_q and memory.fold_o
    # queries and values both 322 wide: no padding, SDPA's fused kernel
    assert memory.values.shape[-1] == memory.keys.shape[-1] == 322 and memory.mlp is None
    patches = torch.rand(1, 2, 27, 8, 12) * 2 - 1
    _close(100 * ours(_on(ours, patches)), 100 * hf(inputs=patches).logits)


@pytest.mark.parametrize("kind", ["language", "vision-conv"])
@torch.no_grad()
def test_latent_stack_in_passes_equals_transformers(tmp_path, monkeypatch, kind, device):
    # On CPU the latent stack (and the classifier as a whole) runs a few rows at a time; with the pass size
    # cut to one row of latents, a batch of three must go through in three passes and still match.
    import perceiver_cli.core.layers as layers

    hf, ours = _load(tmp_path, kind, device)
    monkeypatch.setattr(layers, "CPU_STACK_TOKENS", ours.spec.num_latents)
    passes = []
    stack = layers.Encoder.process
    monkeypatch.setattr(layers.Encoder, "process", lambda self, z: passes.append(z.shape[0]) or stack(self, z))
    if kind == "language":
        ids = torch.randint(6, 262, (3, 24))
        mask = torch.ones(3, 24, dtype=torch.long)
        mask[1, 15:] = 0  # each pass must take its own rows of the padding mask
        expected = hf(inputs=ids, attention_mask=mask).logits[:, :24]
        got = ours(_on(ours, ids), attention_mask=_on(ours, mask))
    else:
        pixels = torch.randn(3, 3, 32, 32)
        expected, got = hf(inputs=pixels).logits, ours(_on(ours, pixels))
    assert passes == ([1, 1, 1] if device == "cpu" else [3])  # elsewhere the whole batch at once
    _close(got, expected)


@torch.no_grad()
def test_decoder_folds_only_when_it_saves_work(tmp_path, device):
    # Folding the query projection into 512 latent keys costs a 512 x q x qk product once: worth it for many
    # queries, not for the classifier's single query. Either way the logits equal transformers'.
    hf, ours = _load(tmp_path, "vision-fourier", device, d_latents=64, num_latents=32)
    layer = ours.perceiver.decoder.decoder.decoding_cross_attention
    z = _on(ours, torch.randn(1, 32, 64))
    assert not layer.memory(z, num_queries=1).fold_q
    assert layer.memory(z, num_queries=1000).fold_q and layer.memory(z).fold_q
    pixels = torch.randn(2, 3, 16, 16)
    _close(ours(_on(ours, pixels)), hf(inputs=pixels).logits)


# Half precision: bfloat16 everywhere (on the CPU: bf16 products, fp32 accumulation); float16 only on an
# accelerator (python -m pytest --device cuda), the CPU refuses it (test_classify). Tolerances: 5% of the
# largest logit (bf16 keeps 8 bits of mantissa through the latent stack).
HALF_TOL = 0.05


def _half_dtype_or_skip(device: str, dtype: str) -> None:
    if device == "cpu" and dtype == "float16":
        pytest.skip("float16 is for accelerators: run with --device cuda")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@torch.no_grad()
def test_half_precision_stays_close_to_float32(tmp_path, device, dtype):
    _half_dtype_or_skip(device, dtype)
    hf = make_tiny_checkpoint("vision-conv", tmp_path / "c")
    ours = load_model(str(tmp_path / "c"), device=device, dtype=dtype, numerics="transformers")
    pixels = torch.randn(2, 3, 32, 32)
    got = ours(pixels.to(device=device, dtype=getattr(torch, dtype))).float().cpu()
    expected = hf(inputs=pixels).logits
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - expected).abs().max().item() <= HALF_TOL * expected.abs().max().item()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@torch.no_grad()
def test_half_precision_language_logits_are_float32_and_close(tmp_path, device, dtype):
    # the byte logits come out in fp32 (the exact top-k search ranks their log-probabilities)
    _half_dtype_or_skip(device, dtype)
    hf = make_tiny_checkpoint("language", tmp_path / "l")
    ours = load_model(str(tmp_path / "l"), device=device, dtype=dtype, numerics="transformers")
    ids = torch.randint(6, 262, (2, 40))
    got = ours(_on(ours, ids)).cpu()
    expected = hf(inputs=ids).logits[:, :40]
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= HALF_TOL * expected.abs().max().item()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@torch.no_grad()
def test_half_precision_flow_head_is_float32_and_close(tmp_path, device, dtype):
    # the flow leaves the decoder's head in fp32: no half-precision rounding of the pixels
    _half_dtype_or_skip(device, dtype)
    hf = make_tiny_checkpoint("flow", tmp_path / "f")
    ours = load_model(str(tmp_path / "f"), device=device, dtype=dtype, numerics="transformers")
    patches = torch.rand(1, 2, 27, 8, 12) * 2 - 1
    got = ours(patches.to(device=device, dtype=getattr(torch, dtype))).cpu()
    expected = hf(inputs=patches).logits
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= HALF_TOL * expected.abs().max().item()


def test_float32_on_cuda_keeps_cudnn_convolutions_in_float32(tmp_path, device):
    if not device.startswith("cuda"):
        pytest.skip("TF32 exists only on CUDA devices: run with --device cuda")
    make_tiny_checkpoint("vision-conv", tmp_path / "c")
    torch.backends.cudnn.allow_tf32 = True  # torch's default
    load_model(str(tmp_path / "c"), device=device, numerics="transformers")
    assert torch.backends.cudnn.allow_tf32 is False
