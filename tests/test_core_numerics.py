"""--numerics deepmind differs from transformers' port by exactly the documented differences.

Each test switches one difference alone in our model and applies the same single change by hand to
transformers' model (hand-written constants, not our code), then requires equal outputs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from perceiver_cli.core import NUMERICS
from perceiver_cli.load import load_model, model_from_directory
from perceiver_cli.core.spec import Numerics
from tiny_models import make_tiny_checkpoint

PORT = NUMERICS["transformers"]


def _only(**change) -> Numerics:
    return dataclasses.replace(PORT, **change)


def _max_diff(a, b):
    return (a - b).abs().max().item()


def _tf_same_conv_by_hand(hf_model):
    # 32x32 input: TF-SAME for the 7x7/2 conv pads 2 before and 3 after; the 3x3/2 pool of a 16x16 map pads
    # 0 before and 1 after (with -inf, as a max-pool pads).
    convnet = hf_model.perceiver.input_preprocessor.convnet
    convnet.conv.zero_pad_2d = nn.ZeroPad2d((2, 3, 2, 3))
    convnet.max_pool = nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), float("-inf")), nn.MaxPool2d(3, 2))


@torch.no_grad()
def test_gelu_alone_is_the_tanh_approximation(tmp_path):
    make_tiny_checkpoint("flow", tmp_path / "ckpt")
    hf_tanh = make_tiny_checkpoint("flow", tmp_path / "unused", hidden_act="gelu_pytorch_tanh")
    ours = model_from_directory(tmp_path / "ckpt", _only(gelu_approximate="tanh")).eval()
    port = model_from_directory(tmp_path / "ckpt", PORT).eval()
    x = torch.rand(1, 2, 27, 8, 12) * 2 - 1
    # compare before the decoder's division by 100, where values are of order one
    assert _max_diff(100 * ours(x), 100 * hf_tanh(inputs=x).logits) <= 1e-4
    assert _max_diff(100 * ours(x), 100 * port(x)) > 1e-4  # the switch does change something


@torch.no_grad()
def test_conv_padding_alone_is_tf_same(tmp_path):
    hf = make_tiny_checkpoint("vision-conv", tmp_path / "c")
    ours = model_from_directory(tmp_path / "c", _only(tf_same_conv=True)).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens_port = hf.perceiver.input_preprocessor(x)[0].shape[1]
    _tf_same_conv_by_hand(hf)
    assert hf.perceiver.input_preprocessor(x)[0].shape[1] == 8 * 8 and tokens_port == 7 * 7
    assert _max_diff(ours(x), hf(inputs=x).logits) <= 1e-4


def test_conv_preprocessing_gives_56x56_tokens_on_224_under_deepmind_and_55x55_under_the_port(tmp_path):
    make_tiny_checkpoint("vision-conv", tmp_path / "c")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for numerics, side in (("deepmind", 56), ("transformers", 55)):
            model = load_model(str(tmp_path / "c"), device="cpu", numerics=numerics)
            assert model.perceiver.input_preprocessor(x).shape[1] == side * side


@torch.no_grad()
def test_kernel_alone_is_the_stored_kernel_transposed(tmp_path):
    hf = make_tiny_checkpoint("vision-conv", tmp_path / "c")
    ours = model_from_directory(tmp_path / "c", _only(untranspose_conv_kernel=True)).eval()
    x = torch.randn(2, 3, 32, 32)
    before = hf(inputs=x).logits
    conv = hf.perceiver.input_preprocessor.convnet.conv
    conv.weight.copy_(conv.weight.transpose(2, 3).contiguous())
    assert _max_diff(ours(x), hf(inputs=x).logits) <= 1e-4
    assert _max_diff(ours(x), before) > 1e-4


@torch.no_grad()
def test_learned_decoder_residual_alone(tmp_path):
    hf = make_tiny_checkpoint("vision-learned", tmp_path / "l")
    ours = model_from_directory(tmp_path / "l", _only(learned_decoder_query_residual=False)).eval()
    x = torch.randn(2, 3, 16, 16)
    hf.perceiver.decoder.decoder.decoding_cross_attention.attention.use_query_residual = False
    assert _max_diff(ours(x), hf(inputs=x).logits) <= 1e-4


@pytest.mark.parametrize("kind", ["vision-fourier", "vision-conv", "vision-learned"])
@torch.no_grad()
def test_residual_is_kept_in_the_other_classifiers_and_everything_combines_to_deepmind(tmp_path, kind):
    hf = make_tiny_checkpoint(kind, tmp_path / "k", hidden_act="gelu_pytorch_tanh")
    ours = load_model(str(tmp_path / "k"), device="cpu", numerics="deepmind")
    size = 32 if kind == "vision-conv" else 16
    x = torch.randn(1, 3, size, size)
    if kind == "vision-conv":
        _tf_same_conv_by_hand(hf)
        conv = hf.perceiver.input_preprocessor.convnet.conv
        conv.weight.copy_(conv.weight.transpose(2, 3).contiguous())
    if kind == "vision-learned":
        hf.perceiver.decoder.decoder.decoding_cross_attention.attention.use_query_residual = False
    assert _max_diff(ours(x), hf(inputs=x).logits) <= 1e-4
