"""Importing DeepMind's Haiku pickles: safe unpickling, the name mapping, and the produced checkpoints.

The Haiku layouts below are written out by hand from DeepMind's code (perceiver/perceiver.py,
io_processors.py, position_encoding.py and the four colabs in google-deepmind/deepmind-research): module
paths such as ``perceiver_encoder/~/self_attention_3/attention/linear_2`` are what Haiku names the modules
those files build, so they are independent of the mapping table under test.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.errors import WeightsError
from perceiver_cli.weights import import_deepmind_file
from perceiver_cli.weights.haiku import (ARCHITECTURES, KINDS, build_config, detect_kind, read_haiku_file,
                                         to_hub_state_dict)

HUB_KEYS = Path(__file__).resolve().parent / "data" / "hub-keys"  # see tests/data/README.md
HUB_KEY_FILES = {
    "language": "language-perceiver", "vision-learned": "vision-perceiver-learned",
    "vision-fourier": "vision-perceiver-fourier", "vision-conv": "vision-perceiver-conv",
    "flow": "optical-flow-perceiver", "multimodal": "multimodal-perceiver",
}

# ---------------------------------------------------------------------------------------------------------
# Haiku layouts of the six networks: {module path: {parameter: shape}}.


def _norm(n):
    return {"scale": (n,), "offset": (n,)}


def _linear(n_in, n_out):
    return {"w": (n_in, n_out), "b": (n_out,)}


def _attention_block(prefix, q_dim, kv_dim, qk, v, cross, widening=1):
    """CrossAttention/SelfAttention of perceiver.py: output width is the query's width."""
    layout = {f"{prefix}/layer_norm": _norm(q_dim)}
    if cross:
        layout[f"{prefix}/layer_norm_1"] = _norm(kv_dim)
        layout[f"{prefix}/layer_norm_2"] = _norm(q_dim)
    else:
        layout[f"{prefix}/layer_norm_1"] = _norm(q_dim)
    layout.update({
        f"{prefix}/attention/linear": _linear(q_dim, qk),
        f"{prefix}/attention/linear_1": _linear(kv_dim, qk),
        f"{prefix}/attention/linear_2": _linear(kv_dim, v),
        f"{prefix}/attention/linear_3": _linear(v, q_dim),
        f"{prefix}/mlp/linear": _linear(q_dim, q_dim * widening),
        f"{prefix}/mlp/linear_1": _linear(q_dim * widening, q_dim),
    })
    return layout


def _encoder(name, n_latents, d_latents, d_model, layers, qk=None, v=None):
    """PerceiverEncoder: latents, one cross-attend (q/k width defaults to the inputs'), `layers` self-attends."""
    cross_qk = qk or d_model
    layout = {f"{name}/~/trainable_position_encoding": {"pos_embs": (n_latents, d_latents)}}
    layout.update(_attention_block(f"{name}/~/cross_attention", d_latents, d_model, cross_qk, v or cross_qk,
                                   cross=True))
    for i in range(layers):
        module = f"{name}/~/self_attention" + (f"_{i}" if i else "")
        self_qk = qk or d_latents
        layout.update(_attention_block(module, d_latents, d_latents, self_qk, v or self_qk, cross=False))
    return layout


def haiku_layout(kind: str, full: bool = False) -> dict[str, dict[str, tuple[int, ...]]]:
    """The Haiku parameter shapes of `kind`: DeepMind's sizes when `full`, else a tiny network."""
    if kind == "language":
        d_latents, d_model, n_lat, layers, positions = (1280, 768, 256, 26, 2048) if full else (64, 32, 4, 2, 16)
        qk = 256 if full else 32
        layout = {"embed": {"embeddings": (262, d_model)},
                  "trainable_position_encoding": {"pos_embs": (positions, d_model)},
                  "embedding_decoder": {"bias": (262,)},
                  "basic_decoder/~/trainable_position_encoding": {"pos_embs": (positions, d_model)}}
        layout.update(_encoder("perceiver_encoder", n_lat, d_latents, d_model, layers, qk=qk, v=d_latents))
        # decoder: qk 8 * 32, values as wide as the byte embeddings, no final projection
        layout.update(_attention_block("basic_decoder/cross_attention", d_model, d_latents, 256, d_model, True))
        return layout
    if kind.startswith("vision-"):
        d_latents, n_lat, layers, labels = (1024, 512, 6, 1000) if full else (64, 4, 2, 10)
        d_model = {"vision-learned": 512, "vision-fourier": 261, "vision-conv": 322}[kind]
        layout = _encoder("perceiver_encoder", n_lat, d_latents, d_model, layers)
        dec = "classification_decoder/~/basic_decoder"
        layout[f"{dec}/~/trainable_position_encoding"] = {"pos_embs": (1, d_latents)}
        layout.update(_attention_block(f"{dec}/cross_attention", d_latents, d_latents, d_latents, d_latents, True))
        layout[f"{dec}/output"] = _linear(d_latents, labels)
        if kind == "vision-learned":
            side = 224 if full else 4
            build = "image_preprocessor/~_build_network_inputs"
            layout["image_preprocessor/~/conv2_d"] = {"w": (1, 1, 3, 256), "b": (256,)}
            layout[f"{build}/trainable_position_encoding"] = {"pos_embs": (side * side, 256)}
            layout[f"{build}/position_encoding_projector/linear"] = _linear(256, 256)
        if kind == "vision-conv":
            down = "image_preprocessor/~/conv2_d_downsample"
            layout[f"{down}/~/conv"] = {"w": (7, 7, 3, 64)}
            layout[f"{down}/~/batchnorm"] = {"scale": (1, 1, 1, 64), "offset": (1, 1, 1, 64)}
        return layout
    if kind == "flow":
        d_latents, n_lat, layers = (512, 2048, 24) if full else (64, 4, 2)
        layout = {"image_preprocessor/patches_linear": _linear(54, 64)}
        layout.update(_encoder("perceiver_encoder", n_lat, d_latents, 322, layers))
        dec = "flow_decoder/~/basic_decoder"
        layout.update(_attention_block(f"{dec}/cross_attention", 322, d_latents, d_latents, d_latents, True))
        layout[f"{dec}/output"] = _linear(322, 2)
        return layout
    if kind == "multimodal":
        d_latents, n_lat, layers, labels, out, label_q = (512, 784, 8, 700, 512, 1024) if full else \
            (64, 4, 2, 10, 32, 16)
        d_model = max(16 + 385, 48 + 195, labels) + 4  # audio, image patches + Fourier features, label; +4
        query = max(385, 195, label_q) + 2
        layout = {}
        for m, width in (("audio", 16 + 385), ("image", 48 + 195), ("label", labels)):
            layout[f"multimodal_preprocessor/{m}_padding"] = {"pos_embs": (1, d_model - width)}
            layout[f"multimodal_preprocessor/{m}_mask_token"] = {"pos_embs": (1, d_model)}
        for m, width in (("audio", 385), ("image", 195), ("label", label_q)):
            layout[f"multimodal_decoder/~decoder_query/{m}_padding"] = {"pos_embs": (1, query - width)}
        layout.update(_encoder("encoder", n_lat, d_latents, d_model, layers))
        layout["classification_decoder/~/basic_decoder/~/trainable_position_encoding"] = {"pos_embs": (1, label_q)}
        dec = "multimodal_decoder/~/basic_decoder"
        layout.update(_attention_block(f"{dec}/cross_attention", query, d_latents, d_latents, d_latents, True))
        layout[f"{dec}/output"] = _linear(query, out)
        layout["audio_postprocessor/linear"] = _linear(out, 16)
        layout["projection_postprocessor/linear"] = _linear(out, 3)
        layout["classification_postprocessor/linear"] = _linear(out, labels)
        return layout
    raise ValueError(kind)


def conv_state_layout() -> dict[str, dict[str, tuple[int, ...]]]:
    """The conv model's Haiku state: BatchNorm moving averages (ExponentialMovingAverage modules)."""
    ema = {"average": (1, 1, 1, 64), "hidden": (1, 1, 1, 64), "counter": ()}
    base = "image_preprocessor/~/conv2_d_downsample/~/batchnorm/~"
    return {f"{base}/mean_ema": dict(ema), f"{base}/var_ema": dict(ema)}


def fill(layout, seed=0):
    """Random float32 arrays for a layout (counters are int32, as Haiku keeps them; variances positive)."""
    rng = np.random.default_rng(seed)
    out = {}
    for module, params in layout.items():
        out[module] = {}
        for name, shape in params.items():
            if name == "counter":
                out[module][name] = np.array(7, dtype=np.int32)
            elif module.endswith("var_ema") and name != "counter":
                out[module][name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            elif name == "scale":  # norm scales near 1, everything else small, so activations stay O(1)
                out[module][name] = (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
            else:
                out[module][name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return out


def zeros(layout):
    """Full-size arrays that take no memory (broadcast views of one zero)."""
    return {m: {n: np.broadcast_to(np.zeros((), np.int32 if n == "counter" else np.float32), s)
                for n, s in p.items()} for m, p in layout.items()}


def write_pickle(path: Path, kind: str, seed: int = 0, wrap: bool | None = None) -> dict:
    """Write a small DeepMind-style file for `kind`; returns the params (and state) it holds."""
    params = fill(haiku_layout(kind), seed)
    state = fill(conv_state_layout(), seed + 1) if kind == "vision-conv" else {}
    wrap = kind.startswith("vision-") if wrap is None else wrap
    obj = {"params": params, "state": state} if wrap else params
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return {**params, **state}


def load_into_transformers(directory: Path):
    """Build the transformers class named by config.json and load model.safetensors with strict=True."""
    import json

    import transformers
    from safetensors.torch import load_file

    config = json.loads((directory / "config.json").read_text())
    model_class = getattr(transformers, config["architectures"][0])
    model = model_class(transformers.PerceiverConfig(**config)).eval()
    state = load_file(str(directory / "model.safetensors"))
    expected = model.state_dict()
    assert sorted(state) == sorted(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    model.load_state_dict(state, strict=True)
    return model, state, config


# ---------------------------------------------------------------------------------------------------------
# Every kind imports and loads strictly.


@pytest.mark.parametrize("kind", KINDS)
def test_small_haiku_file_imports_and_loads_strictly_into_transformers(kind, tmp_path):
    source = tmp_path / f"{kind}.pystate"
    params = write_pickle(source, kind)
    result = import_deepmind_file(source, out_dir=tmp_path / "out", force=True, quiet=True)
    assert result.kind == kind
    model, state, config = load_into_transformers(result.directory)
    assert config["architectures"] == [ARCHITECTURES[kind]]
    assert type(model).__name__ == ARCHITECTURES[kind]
    # values survive the file: a Haiku linear w (in, out) is stored as weight (out, in)
    encoder = "encoder" if kind == "multimodal" else "perceiver_encoder"
    w = params[f"{encoder}/~/self_attention_1/attention/linear"]["w"]
    stored = model.state_dict()["perceiver.encoder.self_attends.1.attention.self.query.weight"].numpy()
    assert np.array_equal(stored, w.T)


@pytest.mark.parametrize("kind", ["flow", "multimodal", "vision-fourier"])
def test_both_file_shapes_are_accepted_bare_params_and_params_with_state(kind, tmp_path):
    bare, wrapped = tmp_path / "bare.pystate", tmp_path / "wrapped.pystate"
    write_pickle(bare, kind, wrap=False)
    write_pickle(wrapped, kind, wrap=True)
    a = to_hub_state_dict(read_haiku_file(bare))[1]
    b = to_hub_state_dict(read_haiku_file(wrapped))[1]
    assert sorted(a) == sorted(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_values_land_where_the_published_conversion_puts_them(tmp_path):
    source = tmp_path / "flow.pystate"
    params = write_pickle(source, "flow")
    kind, state = to_hub_state_dict(read_haiku_file(source))
    assert kind == "flow"
    enc = "perceiver.encoder"
    # a Haiku linear w (in, out) becomes weight (out, in); b stays
    w = params["perceiver_encoder/~/self_attention_1/attention/linear_2"]["w"]
    assert np.array_equal(state[f"{enc}.self_attends.1.attention.self.value.weight"], w.T)
    assert np.array_equal(state[f"{enc}.cross_attention.attention.self.key.bias"],
                          params["perceiver_encoder/~/cross_attention/attention/linear_1"]["b"])
    assert np.array_equal(state[f"{enc}.cross_attention.attention.output.dense.weight"],
                          params["perceiver_encoder/~/cross_attention/attention/linear_3"]["w"].T)
    # cross-attention norms: query norm, key/value norm, then the norm before the MLP
    for haiku, ours in (("layer_norm", "attention.self.layernorm1"), ("layer_norm_1", "attention.self.layernorm2"),
                        ("layer_norm_2", "layernorm")):
        assert np.array_equal(state[f"{enc}.cross_attention.{ours}.weight"],
                              params[f"perceiver_encoder/~/cross_attention/{haiku}"]["scale"])
        assert np.array_equal(state[f"{enc}.cross_attention.{ours}.bias"],
                              params[f"perceiver_encoder/~/cross_attention/{haiku}"]["offset"])
    # self-attention: layer_norm before attention, layer_norm_1 before the MLP
    assert np.array_equal(state[f"{enc}.self_attends.0.layernorm.weight"],
                          params["perceiver_encoder/~/self_attention/layer_norm_1"]["scale"])
    assert np.array_equal(state[f"{enc}.self_attends.1.mlp.dense2.weight"],
                          params["perceiver_encoder/~/self_attention_1/mlp/linear_1"]["w"].T)
    assert np.array_equal(state["perceiver.embeddings.latents"],
                          params["perceiver_encoder/~/trainable_position_encoding"]["pos_embs"])
    assert np.array_equal(state["perceiver.input_preprocessor.conv_after_patches.weight"],
                          params["image_preprocessor/patches_linear"]["w"].T)
    assert np.array_equal(state["perceiver.decoder.decoder.final_layer.weight"],
                          params["flow_decoder/~/basic_decoder/output"]["w"].T)


def test_conv_kernel_has_all_axes_reversed_and_batchnorm_is_squeezed(tmp_path):
    source = tmp_path / "conv.pystate"
    params = write_pickle(source, "vision-conv")
    result = import_deepmind_file(source, out_dir=tmp_path / "out", force=True, quiet=True)
    _, state, _ = load_into_transformers(result.directory)
    hwio = params["image_preprocessor/~/conv2_d_downsample/~/conv"]["w"]
    stored = state["perceiver.input_preprocessor.convnet.conv.weight"].numpy()
    assert stored.shape == (64, 3, 7, 7)
    # the published converter reversed every axis: stored[o, i, a, b] == hwio[b, a, i, o] (kernel transposed)
    assert np.array_equal(stored, hwio.transpose(3, 2, 1, 0))
    assert not np.array_equal(stored, hwio.transpose(3, 2, 0, 1))  # so it is NOT torch's (o, i, kh, kw)
    bn = "perceiver.input_preprocessor.convnet.batchnorm"
    base = "image_preprocessor/~/conv2_d_downsample/~/batchnorm"
    assert np.array_equal(state[f"{bn}.weight"].numpy(), params[base]["scale"].reshape(64))
    assert np.array_equal(state[f"{bn}.running_mean"].numpy(), params[f"{base}/~/mean_ema"]["average"].reshape(64))
    assert np.array_equal(state[f"{bn}.running_var"].numpy(), params[f"{base}/~/var_ema"]["average"].reshape(64))
    assert int(state[f"{bn}.num_batches_tracked"]) == 0


def test_language_and_multimodal_special_names(tmp_path):
    lang = tmp_path / "language.pickle"
    p = write_pickle(lang, "language")
    _, s = to_hub_state_dict(read_haiku_file(lang))
    assert np.array_equal(s["perceiver.input_preprocessor.embeddings.weight"], p["embed"]["embeddings"])  # no .T
    assert np.array_equal(s["embedding_decoder.bias"], p["embedding_decoder"]["bias"])
    assert np.array_equal(s["perceiver.decoder.output_position_encodings.position_embeddings"],
                          p["basic_decoder/~/trainable_position_encoding"]["pos_embs"])
    mm = tmp_path / "video.pystate"
    p = write_pickle(mm, "multimodal")
    _, s = to_hub_state_dict(read_haiku_file(mm))
    assert np.array_equal(s["perceiver.decoder.padding.image"],
                          p["multimodal_decoder/~decoder_query/image_padding"]["pos_embs"])
    assert np.array_equal(s["perceiver.input_preprocessor.mask.label"],
                          p["multimodal_preprocessor/label_mask_token"]["pos_embs"])
    assert np.array_equal(s["perceiver.output_postprocessor.modalities.audio.classifier.weight"],
                          p["audio_postprocessor/linear"]["w"].T)
    assert np.array_equal(s["perceiver.decoder.modalities.label.decoder.output_position_encodings.position_embeddings"],
                          p["classification_decoder/~/basic_decoder/~/trainable_position_encoding"]["pos_embs"])


# ---------------------------------------------------------------------------------------------------------
# DeepMind's full sizes: the same keys and shapes as the hub checkpoints, and the hub's configs.

FULL_FACTS = {  # from the hub configs (shared/reference/checkpoints.md)
    "language": dict(d_model=768, d_latents=1280, num_latents=256, qk_channels=256, v_channels=1280,
                     num_self_attends_per_block=26, num_blocks=1),
    "vision-learned": dict(d_model=512, d_latents=1024, num_latents=512, num_blocks=8, image_size=224,
                           num_self_attends_per_block=6, num_cross_attention_heads=1, qk_channels=None),
    "vision-fourier": dict(d_model=261, d_latents=1024, num_latents=512, num_blocks=8),
    "vision-conv": dict(d_model=322, d_latents=1024, num_latents=512, num_blocks=8),
    "flow": dict(d_model=322, d_latents=512, num_latents=2048, num_self_attends_per_block=24,
                 num_self_attention_heads=16, num_cross_attention_heads=1),
    "multimodal": dict(d_model=704, d_latents=512, num_latents=784, num_self_attends_per_block=8,
                       output_num_channels=512, samples_per_patch=16),
}
PARAMS = {"language": 201108230, "vision-learned": 62255848, "vision-fourier": 48440627,
          "vision-conv": 48646522, "flow": 41057134, "multimodal": 19858855}


def _full_state(kind):
    layout = haiku_layout(kind, full=True)
    if kind == "vision-conv":
        layout.update(conv_state_layout())
    return to_hub_state_dict(zeros(layout), kind)[1]


@pytest.mark.parametrize("kind", KINDS)
def test_full_size_conversion_matches_transformers_and_the_hub_config(kind):
    import torch
    import transformers

    state = _full_state(kind)
    config = build_config(state, kind)
    for key, value in FULL_FACTS[kind].items():
        assert config[key] == value, key
    if kind.startswith("vision-"):
        assert len(config["id2label"]) == 1000 and config["id2label"]["281"] == "tabby, tabby cat"
    if kind == "multimodal":
        assert len(config["id2label"]) == 700 and "_label_trainable_num_channels" not in config
    with torch.device("meta"):
        model = getattr(transformers, config["architectures"][0])(transformers.PerceiverConfig(**config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    floats = sum(int(np.prod(v.shape)) for v in state.values() if v.dtype == np.float32)
    float_buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert floats - float_buffers == PARAMS[kind]  # the parameter count the hub model card gives


@pytest.mark.parametrize("kind", KINDS)
def test_full_size_conversion_equals_the_recorded_hub_keys(kind):
    path = HUB_KEYS / f"{HUB_KEY_FILES[kind]}.keys.txt"
    if not path.is_file():
        pytest.skip(f"the recorded hub key list {path} is missing from this checkout")
    recorded = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        recorded[key] = (tuple(int(n) for n in shape.strip("()").split(",") if n.strip()), dtype)
    state = _full_state(kind)
    ours = {k: (tuple(v.shape), "torch.int64" if v.dtype == np.int64 else "torch.float32") for k, v in state.items()}
    assert ours == recorded


# ---------------------------------------------------------------------------------------------------------
# Unpickling runs no code.


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("nest", [False, True])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, nest):
    marker = tmp_path / "ran"
    evil = _RunsCode(marker)
    obj = {"params": {"embed": {"embeddings": evil}}, "state": {}} if nest else evil
    source = tmp_path / "evil.pystate"
    source.write_bytes(pickle.dumps(obj))
    with pytest.raises(WeightsError, match=r"refusing to unpickle (posix|os|nt)\.system: not a plain array"):
        read_haiku_file(source)
    assert not marker.exists()


def test_builtins_and_other_globals_are_refused(tmp_path):
    source = tmp_path / "evil.pickle"
    source.write_bytes(pickle.dumps({"embed": {"embeddings": eval}}))  # a global reference, never called
    with pytest.raises(WeightsError, match=r"refusing to unpickle builtins\.eval"):
        read_haiku_file(source)
    source.write_bytes(pickle.dumps({"embed": {"embeddings": np.asarray([1, 2], dtype=object)}}))
    with pytest.raises(WeightsError):
        read_haiku_file(source)


class _FlatMapping(dict):
    """A stand-in for haiku._src.data_structures.FlatMapping, which pickles as FlatMapping(plain dict)."""

    def __reduce__(self):
        return _FlatMapping, (dict(self),)


_FlatMapping.__module__ = "haiku._src.data_structures"
_FlatMapping.__qualname__ = _FlatMapping.__name__ = "FlatMapping"


def test_haiku_flatmapping_containers_reduce_to_plain_dicts_without_haiku(tmp_path, monkeypatch):
    module = types.ModuleType("haiku._src.data_structures")
    module.FlatMapping = _FlatMapping
    FlatMapping = _FlatMapping
    for name in ("haiku", "haiku._src", "haiku._src.data_structures"):
        monkeypatch.setitem(sys.modules, name, module if name.endswith("structures") else types.ModuleType(name))
    params = fill(haiku_layout("flow"))
    blob = pickle.dumps(FlatMapping({m: FlatMapping(p) for m, p in params.items()}), protocol=2)
    assert b"haiku._src.data_structures\nFlatMapping" in blob and b"_codecs" in blob
    for name in ("haiku", "haiku._src", "haiku._src.data_structures"):
        monkeypatch.delitem(sys.modules, name)
    source = tmp_path / "flow.pystate"
    source.write_bytes(blob)  # protocol 2 also stores the array bytes through _codecs.encode
    loaded = read_haiku_file(source)
    assert "haiku" not in sys.modules
    assert type(loaded) is dict and set(loaded) == set(params)
    w = params["image_preprocessor/patches_linear"]["w"]
    assert np.array_equal(loaded["image_preprocessor/patches_linear"]["w"], w)


def test_truncated_pickle_and_foreign_networks_are_one_line_errors(tmp_path):
    source = tmp_path / "flow.pystate"
    write_pickle(source, "flow")
    source.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable parameter pickle"):
        read_haiku_file(source)
    with pytest.raises(WeightsError, match="not one of the six"):
        detect_kind({"resnet/~/conv": {"w": np.zeros(3)}})
    params = fill(haiku_layout("flow"))
    params["flow_decoder/~/basic_decoder/extra"] = {"w": np.zeros((2, 2), np.float32)}
    with pytest.raises(WeightsError, match=r"no place in a flow checkpoint: flow_decoder/~/basic_decoder/extra/w"):
        to_hub_state_dict(params)


# ---------------------------------------------------------------------------------------------------------
# The imported networks compute what transformers computes from the same parameters.


def _imported_pair(tmp_path, kind, numerics, **config_changes):
    """Import a small `kind` file; returns (our model, transformers' model) built from the same folder."""
    import json

    from perceiver_cli.load import load_model

    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / f"{kind}.pystate"
    write_pickle(source, kind, seed=3)
    folder = import_deepmind_file(source, out_dir=tmp_path / "out", force=True, quiet=True).directory
    if config_changes:  # parameter-free settings only (Fourier resolution, activation)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    hf, _, _ = load_into_transformers(folder)
    return load_model(str(folder), device="cpu", numerics=numerics), hf


def _max_diff(a, b) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_imported_language_model_equals_transformers(tmp_path):
    import torch

    ours, hf = _imported_pair(tmp_path, "language", "transformers")
    ids = torch.randint(6, 262, (2, 16), generator=torch.Generator().manual_seed(0))
    ids[:, 4:8] = 3
    with torch.no_grad():
        assert _max_diff(ours(ids), hf(inputs=ids).logits) <= 1e-4


def test_imported_flow_model_equals_transformers_and_differs_under_deepmind_numerics_only_by_gelu(tmp_path):
    import torch

    patches = torch.rand(1, 2, 27, 8, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    small = {"train_size": [8, 12]}
    ours, hf = _imported_pair(tmp_path / "a", "flow", "transformers", **small)
    with torch.no_grad():
        assert _max_diff(ours(patches), hf(inputs=patches).logits) <= 1e-4
    # DeepMind's network: the same, with the tanh approximation of GELU (transformers calls it gelu_new)
    ours, hf_tanh = _imported_pair(tmp_path / "b", "flow", "deepmind", hidden_act="gelu_new", **small)
    with torch.no_grad():
        assert _max_diff(ours(patches), hf_tanh(inputs=patches).logits) <= 1e-4
        assert _max_diff(ours(patches), hf(inputs=patches).logits) > 1e-6


def test_an_incomplete_file_is_refused_at_import_not_at_first_use(tmp_path):
    source = tmp_path / "conv.pystate"
    params = fill(haiku_layout("vision-conv"))  # the BatchNorm moving averages (the state) left out
    source.write_bytes(pickle.dumps({"params": params, "state": {}}))
    with pytest.raises(WeightsError, match=r"do not fit a PerceiverForImageClassificationConvProcessing "
                                           r"\(2 missing key\(s\): .*batchnorm.running_mean"):
        import_deepmind_file(source, out_dir=tmp_path / "out", force=True, quiet=True)
    assert not (tmp_path / "out").exists()
