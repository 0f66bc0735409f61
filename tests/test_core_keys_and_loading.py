"""Full-size configs build the hub checkpoints' exact keys; loading errors are one clear line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from perceiver_cli.core import build_model, spec_from_config
from perceiver_cli.core.loading import StateDictMismatch, load_state_dict_strict
from perceiver_cli.core.spec import InvalidConfig, check_spec
from perceiver_cli.errors import WeightsError, UsageError
from perceiver_cli.load import load_model
from tiny_models import make_tiny_checkpoint

KEYS_DIR = Path(__file__).parent / "data" / "hub-keys"

_VISION = dict(num_latents=512, d_latents=1024, num_blocks=8, num_self_attends_per_block=6,
               num_cross_attention_heads=1, num_self_attention_heads=8, id2label={i: str(i) for i in range(1000)})
# The hub configs as ../shared/reference/checkpoints.md records them (everything else is the default).
FULL_CONFIGS = {
    "language-perceiver": dict(architectures=["PerceiverForMaskedLM"], qk_channels=256, v_channels=1280),
    "vision-perceiver-learned": dict(_VISION, architectures=["PerceiverForImageClassificationLearned"],
                                     d_model=512, image_size=224),
    "vision-perceiver-fourier": dict(_VISION, architectures=["PerceiverForImageClassificationFourier"], d_model=261),
    "vision-perceiver-conv": dict(_VISION, architectures=["PerceiverForImageClassificationConvProcessing"],
                                  d_model=322),
    "optical-flow-perceiver": dict(architectures=["PerceiverForOpticalFlow"], num_latents=2048, d_latents=512,
                                   d_model=322, num_self_attends_per_block=24, num_self_attention_heads=16,
                                   num_cross_attention_heads=1),
    "multimodal-perceiver": dict(architectures=["PerceiverForMultimodalAutoencoding"], num_latents=784,
                                 d_latents=512, d_model=704, num_self_attends_per_block=8,
                                 num_self_attention_heads=8, num_cross_attention_heads=1,
                                 id2label={i: str(i) for i in range(700)}),
}


def _hub_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (KEYS_DIR / f"{name}.keys.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        keys[key] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return keys


@pytest.mark.parametrize("name", sorted(FULL_CONFIGS))
def test_full_size_model_has_exactly_the_hub_keys_and_shapes(name):
    with torch.device("meta"):
        model = build_model(spec_from_config(FULL_CONFIGS[name]))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _hub_keys(name)


@pytest.fixture()
def flow_dir(tmp_path):
    make_tiny_checkpoint("flow", tmp_path / "flow")
    return tmp_path / "flow"


def _resave(directory: Path, state: dict) -> None:
    from safetensors.torch import save_file

    save_file(state, str(directory / "model.safetensors"))


def _state(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_missing_key_is_named(flow_dir):
    state = _state(flow_dir)
    del state["perceiver.embeddings.latents"]
    _resave(flow_dir, state)
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): perceiver\.embeddings\.latents"):
        load_model(str(flow_dir), device="cpu")


def test_unexpected_key_is_named(flow_dir):
    state = _state(flow_dir)
    state["perceiver.extra.weight"] = torch.zeros(2)
    _resave(flow_dir, state)
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): perceiver\.extra\.weight"):
        load_model(str(flow_dir), device="cpu")


def test_wrong_shape_is_named(flow_dir):
    state = _state(flow_dir)
    state["perceiver.embeddings.latents"] = torch.zeros(3, 3)
    _resave(flow_dir, state)
    with pytest.raises(WeightsError, match=r"perceiver\.embeddings\.latents is \(3, 3\), expected \(16, 32\)"):
        load_model(str(flow_dir), device="cpu")


def test_truncated_safetensors_is_an_error(flow_dir):
    path = flow_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_model(str(flow_dir), device="cpu")


def test_truncated_pytorch_bin_is_an_error(tmp_path):
    make_tiny_checkpoint("flow", tmp_path / "f", safe=False)
    path = tmp_path / "f" / "pytorch_model.bin"
    assert path.exists()
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_model(str(tmp_path / "f"), device="cpu")


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    make_tiny_checkpoint("flow", tmp_path / "f", safe=False)
    marker = tmp_path / "pwned"
    bin_path = tmp_path / "f" / "pytorch_model.bin"
    torch.save({"x": _Evil(str(marker))}, str(bin_path), _use_new_zipfile_serialization=True, pickle_module=pickle)
    with pytest.raises(WeightsError, match="never unpickled|cannot load weights"):
        load_model(str(tmp_path / "f"), device="cpu")
    assert not marker.exists()


def test_folder_without_config_is_an_error(tmp_path):
    (tmp_path / "w").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        load_model(str(tmp_path / "w"), device="cpu")


def test_config_of_another_class_is_refused_for_a_task(flow_dir):
    with pytest.raises(UsageError, match="PerceiverForOpticalFlow checkpoint .*cannot run 'classify'"):
        load_model(str(flow_dir), device="cpu", task="classify")


def test_unknown_architecture_is_refused(flow_dir):
    config = json.loads((flow_dir / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (flow_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="not one of the six Perceiver IO classes"):
        load_model(str(flow_dir), device="cpu")


def test_model_is_in_eval_mode_without_gradients(flow_dir):
    model = load_model(str(flow_dir), device="cpu")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@torch.no_grad()
def test_pytorch_bin_checkpoint_loads_and_computes_like_transformers(tmp_path):
    hf = make_tiny_checkpoint("vision-fourier", tmp_path / "b", safe=False)
    ours = load_model(str(tmp_path / "b"), device="cpu", numerics="transformers")
    x = torch.randn(1, 3, 16, 16)
    assert (ours(x) - hf(inputs=x).logits).abs().max().item() <= 1e-4


def test_loading_and_running_never_imports_the_compiler_stack(tmp_path):
    # Start-up cost, checked without timing: torch._dynamo (about a second to import) must not be pulled in
    # by building any of the six models on the meta device, loading a checkpoint, or a forward pass.
    import subprocess
    import sys

    make_tiny_checkpoint("language", tmp_path / "language")
    script = f"""
import sys, torch
from benchmarks.configs import FULL_CONFIGS
from perceiver_cli.core import build_model, spec_from_config
from perceiver_cli.load import load_model
for config in FULL_CONFIGS.values():
    with torch.device("meta"):
        build_model(spec_from_config(config), "deepmind")
model = load_model({str(tmp_path / "language")!r}, device="cpu")
with torch.inference_mode():
    model(torch.randint(6, 262, (1, 12)))
print("torch._dynamo" in sys.modules)
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------------------
# Core's own errors speak of parameters, shapes and config fields, never of flags or files.

def test_core_strict_load_names_keys_and_shapes_without_flags(flow_dir):
    with torch.device("meta"):
        model = build_model(spec_from_config(json.loads((flow_dir / "config.json").read_text())))
    state = _state(flow_dir)
    state["perceiver.embeddings.latents"] = torch.zeros(3, 3)
    with pytest.raises(StateDictMismatch) as info:
        load_state_dict_strict(model, state)
    message = str(info.value)
    assert "perceiver.embeddings.latents is (3, 3), expected (16, 32)" in message
    assert "--" not in message and str(flow_dir) not in message


MASKED_LM = dict(architectures=["PerceiverForMaskedLM"], num_latents=8, d_latents=48, d_model=32,
                 num_self_attends_per_block=1, num_self_attention_heads=4, num_cross_attention_heads=2,
                 qk_channels=16, max_position_embeddings=16)


@pytest.mark.parametrize("change, fields", [
    (dict(v_channels=64), ["v_channels", "d_latents 48"]),                       # values wider than the latents
    (dict(v_channels=48, num_self_attention_heads=5), ["num_self_attention_heads 5"]),
    (dict(v_channels=48, qk_channels=15), ["qk", "num_self_attention_heads", "num_cross_attention_heads"]),
    (dict(v_channels=48, d_model=36), ["d_model 36", "8 heads"]),
    (dict(v_channels=48, num_latents=0), ["num_latents 0"]),
    (dict(v_channels=48, vocab_size=100), ["vocab_size 100"]),
])
def test_an_inconsistent_config_is_refused_naming_its_fields(change, fields):
    spec = spec_from_config({**MASKED_LM, **change})
    with pytest.raises(InvalidConfig) as info:
        check_spec(spec)
    message = str(info.value)
    assert "\n" not in message and "--" not in message
    for field in fields:
        assert field in message


def test_the_consistent_neighbour_of_those_configs_builds():
    spec = spec_from_config({**MASKED_LM, "v_channels": 48})
    check_spec(spec)
    with torch.device("meta"):
        build_model(spec)


@pytest.mark.parametrize("name", sorted(FULL_CONFIGS))
def test_the_six_hub_configs_pass_the_checks(name):
    check_spec(spec_from_config(FULL_CONFIGS[name]))


def test_multimodal_output_shape_and_audio_patches_are_checked():
    config = dict(FULL_CONFIGS["multimodal-perceiver"])
    with pytest.raises(InvalidConfig, match=r"output_shape \[1, 8, 224, 224\] .*num_frames 16"):
        check_spec(spec_from_config({**config, "output_shape": [1, 8, 224, 224]}))
    with pytest.raises(InvalidConfig, match=r"samples_per_patch 7"):
        check_spec(spec_from_config({**config, "samples_per_patch": 7}))


def test_a_checkpoint_that_would_fail_inside_its_forward_is_refused_when_loaded(tmp_path):
    # transformers builds this config and saves weights for it; our loader refuses it before any forward pass
    make_tiny_checkpoint("language", tmp_path / "lm", d_latents=48, v_channels=64, qk_channels=16,
                         num_self_attention_heads=4)
    with pytest.raises(WeightsError, match=r"v_channels.*d_latents 48"):
        load_model(str(tmp_path / "lm"), device="cpu")


def test_running_such_a_checkpoint_is_a_usage_error_naming_the_fields_not_an_internal_error(tmp_path, capsys):
    from perceiver_cli.cli import main

    make_tiny_checkpoint("language", tmp_path / "lm", d_latents=48, v_channels=64, qk_channels=16)
    capsys.readouterr()
    code = main(["fill-mask", "a[MASK]b", "-w", str(tmp_path / "lm")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.splitlines() == [f"perceiver: error: {tmp_path / 'lm'}: config.json: self-attention values of 64 "
                                "channels (v_channels) cannot be added back to latents of d_latents 48"]
