"""bfloat16 on the CPU: --dtype bfloat16 runs, --dtype auto follows the CPU's bf16 units, the run says which
dtype it computes in, and results stay near float32's. (Parity in bf16: tests/test_core_parity.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import perceiver_cli.runtime as runtime
from perceiver_cli.cli import main
from perceiver_cli.errors import UsageError
from perceiver_cli.load import compute_check
from tiny_models import make_tiny_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def conv_weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16-weights")
    make_tiny_checkpoint("vision-conv", root / "c", seed=3)
    return root / "c"


def _classify(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["classify", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def _photo(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


def _cpuinfo(tmp_path, monkeypatch, flags: str) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
    monkeypatch.setattr(runtime, "CPUINFO", str(info))


@pytest.mark.parametrize("flags, units", [("avx512f avx512_bf16", "avx512_bf16"), ("amx_tile amx_bf16", "amx_bf16"),
                                          ("avx512f", None)])
def test_bf16_units_come_from_the_cpu_flags(tmp_path, monkeypatch, flags, units):
    _cpuinfo(tmp_path, monkeypatch, flags)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert runtime.cpu_bf16_units() == units
    assert runtime.pick_dtype("auto", CPU) == (torch.bfloat16 if units else torch.float32)


def test_auto_stays_float32_when_onednn_has_no_bf16_kernels_or_no_cpuinfo(tmp_path, monkeypatch):
    _cpuinfo(tmp_path, monkeypatch, "avx512_bf16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert runtime.pick_dtype("auto", CPU) == torch.float32
    monkeypatch.setattr(runtime, "CPUINFO", str(tmp_path / "absent"))
    assert runtime.cpu_bf16_units() is None and runtime.pick_dtype("auto", CPU) == torch.float32


def test_default_is_float32_and_float16_is_refused_on_the_cpu():
    assert runtime.pick_dtype(None, CPU) == torch.float32
    assert runtime.pick_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(UsageError, match="float16 is for accelerators"):
        runtime.pick_dtype("float16", CPU)


def test_classify_in_bf16_says_so_and_stays_near_float32(conv_weights, capsys, tmp_path):
    photo = str(_photo(tmp_path))
    common = [photo, "--weights", str(conv_weights), "--device", "cpu", "--json", "-k", "3"]
    code, fp32, err32 = _classify(capsys, *common)
    assert code == 0 and "bfloat16" not in err32
    code, bf16, err16 = _classify(capsys, *common, "--dtype", "bfloat16")
    assert code == 0
    assert [line for line in err16.splitlines() if "computing in bfloat16" in line and "--dtype float32" in line]
    top32, top16 = fp32[0]["predictions"], bf16[0]["predictions"]
    assert top16[0]["label"] == top32[0]["label"]
    assert abs(top16[0]["score"] - top32[0]["score"]) <= 0.02


def test_auto_computes_in_what_the_cpu_multiplies_natively(conv_weights, capsys, tmp_path, monkeypatch):
    photo = str(_photo(tmp_path))
    common = [photo, "--weights", str(conv_weights), "--device", "cpu", "--json", "--dtype", "auto"]
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: None)
    code, _, err = _classify(capsys, *common)
    assert code == 0 and "bfloat16" not in err
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "avx512_bf16")
    code, _, err = _classify(capsys, *common)
    assert code == 0 and "computing in bfloat16 (native on this CPU (avx512_bf16))" in err


def test_verify_names_what_auto_computes_in(monkeypatch):
    import perceiver_cli.load as load

    monkeypatch.setattr(load, "cpu_bf16_units", lambda: "amx_bf16")
    check = compute_check()
    assert check.status == "NOTE" and "bfloat16" in check.detail and "amx_bf16" in check.detail
    monkeypatch.setattr(load, "cpu_bf16_units", lambda: None)
    assert "float32" in compute_check().detail


def test_auto_picks_bf16_for_every_task_on_a_cpu_with_bf16_units(monkeypatch):
    from perceiver_cli.tasks.engine import RuntimeRequest
    from perceiver_cli.tasks.flow import FlowTask
    from perceiver_cli.tasks.classify import ClassifyTask

    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "avx512_bf16")
    flow, classify = FlowTask(["a.png", "b.png"]), ClassifyTask(["a.png"])
    assert RuntimeRequest("cpu", "auto").resolve(flow).dtype == torch.bfloat16
    assert RuntimeRequest("cpu", "bfloat16").resolve(flow).dtype == torch.bfloat16
    assert RuntimeRequest("cpu", "auto").resolve(classify).dtype == torch.bfloat16


@pytest.mark.parametrize("mask_kind", [None, "bool", "additive", "per-query"])
@pytest.mark.parametrize("heads,n_q,n_k,n_blocks", [(1, 301, 20000, 4), (3, 40, 50, 2), (5, 300, 1500, 4),
                                                    (4, 300, 4096, 8)])
def test_bf16_attention_is_sdpa_by_blocks(mask_kind, heads, n_q, n_k, n_blocks):
    # bf16 attention on the CPU is multiplied out block by block: compare with fp32 SDPA where all heads share
    # one product (3 small heads), where they go 4 and 1 (5 heads), where each head is a block (4 heads of
    # 300 x 4096 scores), and where one head's scores are cut into query blocks, the last one short (1 head
    # over 20000 keys: 256 + 45 queries); two batch rows, each kind of mask. The blocks share one scores buffer,
    # the first block's size, and the softmax runs in it in place
    from perceiver_cli.core.layers import BF16_QUERY_BLOCK, BF16_SCORES_BYTES, attention, attention_blocks

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, n, 32, generator=g) for n in (n_q, n_k, n_k))
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(2, 1, 1, n_k, generator=g) > 0.3
        mask[..., 0] = True
    elif mask_kind == "additive":
        mask = torch.randn(2, 1, 1, n_k, generator=g)
    elif mask_kind == "per-query":
        mask = torch.randn(2, heads, n_q, n_k, generator=g)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.05)
    # SDPA's rule: a float mask has q's dtype
    bf16_mask = mask if mask is None or mask.dtype == torch.bool else mask.bfloat16()
    got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bf16_mask, 0.05)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert (got.float() - want).abs().max() < 0.03 * want.abs().max()
    blocks = list(attention_blocks(2, heads, n_q, n_k))
    covered = torch.zeros(2, heads, n_q, dtype=torch.int)
    for i, hs, rows in blocks:
        covered[i, hs, rows] += 1
        n_rows = len(range(n_q)[rows])
        assert n_rows * n_k * 2 * len(range(heads)[hs]) <= BF16_SCORES_BYTES or n_rows <= BF16_QUERY_BLOCK
    assert bool((covered == 1).all()) and len(blocks) == n_blocks
