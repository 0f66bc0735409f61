"""Dense layers through oneDNN on the CPU (core.layers.linear): the choice of engine, agreement with float64
and F.linear, and the fallback."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F

import perceiver_cli.core.layers as layers
from perceiver_cli.core import build_model, spec_from_config
from perceiver_cli.load import load_model
from perceiver_cli.core.autoencode import decode_clip
from perceiver_cli.errors import UsageError
from tiny_models import TINY_CONFIGS, make_tiny_checkpoint


ON_X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture
def engine(monkeypatch):
    """Set ONEDNN_LINEAR for one test (restored after), with no PERCEIVER_CLI_CPU_MATMUL in the environment."""
    monkeypatch.delenv(layers.MATMUL_ENV, raising=False)

    def use(value):
        monkeypatch.setattr(layers, "ONEDNN_LINEAR", value)
    return use


def _reference(x, w, b=None, r=None):
    out = x.double() @ w.double().t()
    if b is not None:
        out = out + b.double()
    return out if r is None else out + r.double()


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 40, 96, generator=g)
    w = torch.randn(72, 96, generator=g)
    b = torch.randn(72, generator=g)
    r = torch.randn(3, 40, 72, generator=g)
    return x, w, b, r


@pytest.mark.skipif(not ON_X86, reason="the x86 wheels carry oneDNN's fp32 linear")
def test_onednn_works_on_this_cpu():
    assert layers.onednn_linear_works() is True


@pytest.mark.parametrize("machine, capability, chosen", [
    ("x86_64", "AVX512", True), ("AMD64", "AVX512", True), ("x86_64", "AVX2", False),
    ("x86_64", "DEFAULT", False), ("aarch64", "AVX512", False), ("arm64", "DEFAULT", False)])
def test_default_engine_follows_the_cpu(engine, monkeypatch, machine, capability, chosen):
    engine(None)
    monkeypatch.setattr(layers, "_ONEDNN_WORKS", True)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert layers.onednn_linear_available() is chosen
    assert layers.ONEDNN_LINEAR is chosen  # decided once


@pytest.mark.parametrize("value, capability, chosen", [
    ("blas", "AVX512", False), ("BLAS", "AVX512", False), ("onednn", "AVX2", True), (" oneDNN ", "DEFAULT", True),
    ("", "AVX512", True), ("  ", "AVX2", False)])
def test_environment_overrides_the_cpu_check(engine, monkeypatch, value, capability, chosen):
    engine(None)
    monkeypatch.setenv(layers.MATMUL_ENV, value)
    monkeypatch.setattr(layers, "_ONEDNN_WORKS", True)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert layers.onednn_linear_available() is chosen


@pytest.mark.parametrize("value", ["fast", "mkl", "1"])
def test_an_unknown_engine_name_is_a_usage_error_when_a_model_is_built(engine, monkeypatch, value):
    engine(None)
    monkeypatch.setenv(layers.MATMUL_ENV, value)
    with pytest.raises(UsageError, match=rf"^{layers.MATMUL_ENV}: '{value}' is neither onednn nor blas"):
        build_model(spec_from_config(dict(TINY_CONFIGS["language"], architectures=["PerceiverForMaskedLM"])))
    assert layers.ONEDNN_LINEAR is None  # nothing decided; the next build asks again


def test_a_broken_op_is_never_used_even_when_asked_for(engine, monkeypatch):
    engine(True)
    monkeypatch.setattr(layers, "_ONEDNN_WORKS", False)
    assert layers.onednn_linear_available() is False
    x, w, b, r = _tensors(5)
    assert torch.equal(layers.linear(x, w, b, residual=r), F.linear(x, w, b) + r)


@pytest.mark.parametrize("onednn", [True, False])
def test_linear_matches_float64_with_bias_residual_and_strided_inputs(engine, onednn):
    engine(onednn)
    x, w, b, r = _tensors()
    with torch.inference_mode():
        cases = [
            (layers.linear(x, w, b), _reference(x, w, b)),
            (layers.linear(x, w), _reference(x, w)),
            (layers.linear(x, w, b, residual=r), _reference(x, w, b, r)),
            # a residual that only broadcasts, strided inputs and weights
            (layers.linear(x, w, b, residual=r[:1]), _reference(x, w, b, r[:1])),
            (layers.linear(x.transpose(0, 1), w, b), _reference(x.transpose(0, 1), w, b)),
            (layers.linear(x[..., :80], w[:, :80]), _reference(x[..., :80], w[:, :80])),
            (layers.linear(x[0, 0], w, b), _reference(x[0, 0], w, b)),
        ]
    for got, want in cases:
        assert got.dtype == torch.float32 and got.shape == want.shape
        err = (got.double() - want).abs().max().item()
        assert err <= 1e-5 * want.abs().max().item(), err


def test_off_is_exactly_f_linear(engine):
    engine(False)
    x, w, b, r = _tensors(1)
    assert torch.equal(layers.linear(x, w, b), F.linear(x, w, b))
    assert torch.equal(layers.linear(x, w, b, residual=r), F.linear(x, w, b) + r)


def test_autograd_goes_through_f_linear(engine):
    engine(True)
    x, w, b, _ = _tensors(2)
    w.requires_grad_(True)
    layers.linear(x, w, b).sum().backward()
    assert w.grad is not None and torch.allclose(w.grad, x.sum(dim=(0, 1)).expand_as(w), rtol=1e-4, atol=1e-4)


def test_a_torch_without_the_op_falls_back(engine, monkeypatch):
    engine(True)
    monkeypatch.setattr(layers, "_ONEDNN_WORKS", None)

    class NoOps:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(torch.ops, "mkldnn", NoOps())
    x, w, b, r = _tensors(3)
    assert torch.equal(layers.linear(x, w, b, residual=r), F.linear(x, w, b) + r)
    assert layers._ONEDNN_WORKS is False


@pytest.mark.parametrize("kind", ["vision-conv", "language", "multimodal"])
def test_models_agree_with_either_engine(tmp_path, engine, kind):
    make_tiny_checkpoint(kind, tmp_path / kind)
    model = load_model(tmp_path / kind, device="cpu")
    g = torch.Generator().manual_seed(4)
    if kind == "vision-conv":
        run = lambda: model(torch.randn(2, 3, 224, 224, generator=g))  # noqa: E731
    elif kind == "language":
        run = lambda: model(torch.randint(0, 262, (2, 64), generator=g))  # noqa: E731
    else:
        images, audio = torch.randn(1, 2, 3, 8, 8, generator=g), torch.randn(1, 64, generator=g)
        run = lambda: tuple(decode_clip(model, model.encode(images, audio), chunk_size=100).values())  # noqa: E731
    with torch.inference_mode():
        engine(False)
        g.manual_seed(4)
        slow = run()
        engine(True)
        g.manual_seed(4)
        fast = run()
    slow, fast = (t if isinstance(t, tuple) else (t,) for t in (slow, fast))
    for a, b in zip(slow, fast):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * a.abs().max().item())
