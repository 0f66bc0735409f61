"""DeepMind's original Perceiver IO files (Haiku parameter pickles) turned into hub-layout checkpoints.

DeepMind published six pickles (see registry.py). Each holds Haiku's two-level mapping
``{module path: {parameter name: array}}``: the language file is that mapping itself; the ImageNet
``.pystate`` files wrap it as ``{'params': ..., 'state': ...}`` (the conv model's ``state`` carries the
BatchNorm moving averages); DeepMind's own colabs load the flow and video files as a bare params mapping,
so both shapes are accepted for every kind.

Reading them never runs code (perceiver_cli.weights.haiku_pickle).

The conversion reproduces the published haiku-to-pytorch conversion (the one that produced the hub
checkpoints) exactly, so an imported file equals what the hub holds: same keys, same shapes, same layout:

- Haiku ``Linear`` ``w`` is (in, out); ours is (out, in). Every ``w`` has ALL its axes reversed, which for a
  conv kernel turns Haiku's HWIO (kh, kw, in, out) into (out, in, kw, kh): the stored 7x7 kernel of the conv
  checkpoint is spatially transposed relative to torch's (out, in, kh, kw). The 1x1 conv is unaffected.
- LayerNorm ``scale``/``offset`` become ``weight``/``bias``; BatchNorm parameters and its moving averages
  (``mean_ema``/``var_ema`` ``average``) are squeezed from (1, 1, 1, C) to (C,), the EMA ``counter`` and
  ``hidden`` are dropped, and ``num_batches_tracked`` is written as 0, as the hub file has it.
- Embeddings and trainable position encodings (``pos_embs``) keep their (index, channels) layout.

Where DeepMind's network differs from transformers' port of it (the hub checkpoints were converted for the
port). perceiver_cli.core applies these under ``--numerics deepmind``; ``--numerics transformers``
reproduces the port:

1. Conv preprocessing (vision-conv): DeepMind pads TF-SAME for the 7x7 stride-2 conv (on 224 pixels: 2
   before, 3 after) AND for the 3x3 stride-2 max-pool (0 before, 1 after), giving 56x56 = 3136 tokens; the
   port pads the conv 3/3 and does not pad the pool, giving 55x55 = 3025 tokens.
2. The stored 7x7 kernel is spatially transposed (see above): DeepMind's network uses
   ``weight.transpose(-1, -2)`` of what the file holds; the port uses it as stored.
3. The learned-position ImageNet classifier (vision-learned): DeepMind's decoder cross-attention has no
   query residual (``use_query_residual=False`` in its colab); the port adds one. The Fourier and conv
   classifiers do use it in both.
4. GELU: DeepMind's MLPs call ``jax.nn.gelu``, whose default is the tanh approximation; the port uses the
   exact erf GELU (config ``hidden_act: "gelu"``).

Facts the input adapters need (not weight layout, but easy to get wrong):

- Flow patches: DeepMind pads each frame (already scaled to [-1, 1]) with one zero pixel on every side and
  takes 3x3 patches in ``tf.image.extract_patches`` order, i.e. 27 channels ordered (row, column, RGB) with
  RGB fastest; the 54 inputs of ``conv_after_patches`` are frame 0's 27 then frame 1's 27.
- Multimodal: tokens and decoder queries are concatenated in sorted modality order (audio, image, label).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

from perceiver_cli.labels import IMAGENET_LABELS, KINETICS_LABELS, shipped_labels
from perceiver_cli.errors import WeightsError
from perceiver_cli.kinds import AUTOENCODE_VIDEO, BY_NAME, CLASSIFY, FILL_MASK, KINDS as ROWS
from perceiver_cli.weights.haiku_pickle import HaikuParams, read_haiku_file
from perceiver_cli.weights.registry import CHECKPOINTS
import numpy as np

# Derived from the registry: the short names, their classes, and what the weights cannot tell (heads, blocks).
KINDS = tuple(entry.name for entry in CHECKPOINTS)
ARCHITECTURES = {entry.name: entry.architecture for entry in CHECKPOINTS}
_HEADS_AND_BLOCKS = {entry.name: (entry.self_heads, entry.cross_heads, entry.blocks) for entry in CHECKPOINTS}

# ---------------------------------------------------------------------------------------------------------
# Which of the six networks a parameter tree belongs to.


def detect_kind(params: Mapping[str, Any]) -> str:
    """Name the checkpoint kind from its Haiku module paths (the names DeepMind's code gives them): the first
    row of perceiver_cli.kinds whose marker some module matches."""
    modules = set(params)

    def some(pattern: str) -> bool:
        return bool(pattern) and any(re.fullmatch(pattern, module) for module in modules)

    for row in ROWS:
        if some(row.haiku.marker) and not some(row.haiku.unless):
            return row.name
    shown = ", ".join(sorted(modules)[:4]) or "none"
    raise WeightsError(f"these parameters are not one of the six Perceiver IO networks (modules: {shown})")


# ---------------------------------------------------------------------------------------------------------
# Haiku names -> hub names.

# Inside a CrossAttention module: two input norms (query, then key/value), the norm before the MLP,
# then the attention's four projections and the MLP's two.
_CROSS_INNER = {
    "layer_norm": "attention.self.layernorm1",
    "layer_norm_1": "attention.self.layernorm2",
    "layer_norm_2": "layernorm",
    "attention/linear": "attention.self.query",
    "attention/linear_1": "attention.self.key",
    "attention/linear_2": "attention.self.value",
    "attention/linear_3": "attention.output.dense",
    "mlp/linear": "mlp.dense1",
    "mlp/linear_1": "mlp.dense2",
}
# Inside a SelfAttention module there is one norm before attention and one before the MLP.
_SELF_INNER = {
    "layer_norm": "attention.self.layernorm1",
    "layer_norm_1": "layernorm",
    **{k: v for k, v in _CROSS_INNER.items() if "/" in k},
}

_DENSE = {"w": "weight", "b": "bias"}
_NORM = {"scale": "weight", "offset": "bias"}
_ENCODER = "(?:perceiver_encoder|encoder)"

# (module pattern, target, style): every kind's encoder, then the kind's own rows (perceiver_cli.kinds).
# styles: cross/self (an attention block, the rest of the path picks the layer), dense (w, b),
# leaf:<param> (one array becomes the target itself), batchnorm (scale, offset), ema (average).
_ENCODER_RULES: list[tuple[str, str, str]] = [
    (rf"{_ENCODER}/~/cross_attention/(?P<inner>.+)", "perceiver.encoder.cross_attention", "cross"),
    (rf"{_ENCODER}/~/self_attention(?:_(?P<i>\d+))?/(?P<inner>.+)", "perceiver.encoder.self_attends.{i}", "self"),
    (rf"{_ENCODER}/~/trainable_position_encoding", "perceiver.embeddings.latents", "leaf:pos_embs"),
]
_COMPILED = {row.name: [(re.compile(pattern), target, style) for pattern, target, style
                        in _ENCODER_RULES + list(row.haiku.rules)] for row in ROWS}

_DROPPED = object()  # EMA bookkeeping that has no place in torch's BatchNorm


def _reverse_axes(a):
    return np.transpose(a)  # a view: the copy happens once, when the file is written


def _squeeze(a):
    return np.squeeze(a)


def _keep(a):
    return a


def hub_name(module: str, param: str, kind: str) -> Any:
    """The hub key and array transform for one Haiku parameter; None if it has no place in `kind`."""
    for pattern, target, style in _COMPILED[kind]:
        match = pattern.fullmatch(module)
        if match is None:
            continue
        groups = match.groupdict()
        prefix = target.format(i=groups.get("i") or 0, m=groups.get("m"))
        if style in ("cross", "self"):
            inner = (_CROSS_INNER if style == "cross" else _SELF_INNER).get(groups["inner"])
            if inner is None:
                return None
            table = _NORM if "norm" in inner else _DENSE
            if param not in table:
                return None
            return f"{prefix}.{inner}.{table[param]}", _reverse_axes if param == "w" else _keep
        if style == "dense":
            if param not in _DENSE:
                return None
            return f"{prefix}.{_DENSE[param]}", _reverse_axes if param == "w" else _keep
        if style.startswith("leaf:"):
            return (prefix, _keep) if param == style[5:] else None
        if style == "batchnorm":
            return (f"{prefix}.{_NORM[param]}", _squeeze) if param in _NORM else None
        if style == "ema":
            if param in ("counter", "hidden"):
                return _DROPPED
            return (prefix, _squeeze) if param == "average" else None
    return None


def to_hub_state_dict(params: HaikuParams, kind: Optional[str] = None,
                      source: str = "checkpoint") -> tuple[str, dict[str, Any]]:
    """Convert Haiku params (+ state) into hub keys and layouts; returns (kind, {key: float32 array}).

    Arrays may be views of the inputs (transposed, squeezed); they are made contiguous when written.
    """
    kind = kind or detect_kind(params)
    if kind not in KINDS:
        raise WeightsError(f"unknown checkpoint kind '{kind}' (one of {', '.join(KINDS)})")
    state: dict[str, Any] = {}
    unplaced: list[str] = []
    for module in sorted(params):
        for param in sorted(params[module]):
            mapped = hub_name(module, param, kind)
            if mapped is _DROPPED:
                continue
            if mapped is None:
                unplaced.append(f"{module}/{param}")
                continue
            key, transform = mapped
            if key in state:
                raise WeightsError(f"{source}: two Haiku parameters map to {key}")
            value = transform(params[module][param])
            state[key] = value.astype(np.float32, copy=False) if value.dtype.kind == "f" else value
    if unplaced:
        raise WeightsError(f"{source}: {len(unplaced)} Haiku parameter(s) have no place in a {kind} checkpoint: "
                           f"{', '.join(unplaced[:3])}{' ...' if len(unplaced) > 3 else ''}")
    if "perceiver.input_preprocessor.convnet.batchnorm.weight" in state:
        # torch's BatchNorm counts training steps; the hub file stores 0, as a fresh module has it.
        state["perceiver.input_preprocessor.convnet.batchnorm.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return kind, state


# ---------------------------------------------------------------------------------------------------------
# config.json, as the hub has it, from the converted shapes.


def _id2label(count: int, filename: str, generic: str) -> dict[str, str]:
    names = shipped_labels(filename)
    if len(names) != count:  # a smaller network than DeepMind's: the shipped names do not apply
        names = [f"{generic} {i}" for i in range(count)]
    return {str(i): name for i, name in enumerate(names)}


def _shape(state: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise WeightsError(f"{source}: the checkpoint lacks {key}, so its sizes cannot be read")
    return tuple(int(n) for n in state[key].shape)


def build_config(state: Mapping[str, Any], kind: str, source: str = "checkpoint") -> dict[str, Any]:
    """A Hugging Face config.json for converted weights: architecture, every size, and labels."""
    enc = "perceiver.encoder"
    num_latents, d_latents = _shape(state, "perceiver.embeddings.latents", source)
    (d_model,) = _shape(state, f"{enc}.cross_attention.attention.self.layernorm2.weight", source)
    qk_cross = _shape(state, f"{enc}.cross_attention.attention.self.query.weight", source)[0]
    v_cross = _shape(state, f"{enc}.cross_attention.attention.self.value.weight", source)[0]
    cross_mlp = _shape(state, f"{enc}.cross_attention.mlp.dense1.weight", source)[0]
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith(f"{enc}.self_attends.")})
    if not layers or layers != list(range(len(layers))):
        raise WeightsError(f"{source}: the encoder's self-attention layers are missing or not numbered 0..n-1")
    qk_self = _shape(state, f"{enc}.self_attends.0.attention.self.query.weight", source)[0]
    v_self = _shape(state, f"{enc}.self_attends.0.attention.self.value.weight", source)[0]
    self_mlp = _shape(state, f"{enc}.self_attends.0.mlp.dense1.weight", source)[0]

    # transformers' defaults: cross-attention projects to the inputs' width, self-attention keeps its own.
    if (qk_cross, v_cross, qk_self, v_self) == (d_model, d_model, d_latents, d_latents):
        qk_channels = v_channels = None
    elif qk_cross == qk_self and v_cross == v_self:
        qk_channels, v_channels = qk_cross, v_cross
    else:
        raise WeightsError(f"{source}: cross- and self-attention use different projection widths, "
                           "which a Perceiver config cannot express")
    self_heads, cross_heads, blocks = _HEADS_AND_BLOCKS[kind]
    for heads, width, what in ((self_heads, qk_self, "self"), (cross_heads, qk_cross, "cross")):
        if width % heads:
            raise WeightsError(f"{source}: {what}-attention width {width} does not split into {heads} heads")

    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[kind]],
        "model_type": "perceiver",
        "num_latents": num_latents,
        "d_latents": d_latents,
        "d_model": d_model,
        "num_blocks": blocks,
        "num_self_attends_per_block": len(layers),
        "num_self_attention_heads": self_heads,
        "num_cross_attention_heads": cross_heads,
        "qk_channels": qk_channels,
        "v_channels": v_channels,
        "cross_attention_shape_for_attention": "kv",
        "self_attention_widening_factor": self_mlp // d_latents,
        "cross_attention_widening_factor": cross_mlp // d_latents,
        "hidden_act": "gelu",
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "use_query_residual": True,
        "vocab_size": 262,
        "max_position_embeddings": 2048,
        "image_size": 56,
        "train_size": [368, 496],
        "num_frames": 16,
        "audio_samples_per_frame": 1920,
        "samples_per_patch": 16,
        "output_shape": [1, 16, 224, 224],
        "output_num_channels": 512,
    }
    task = BY_NAME[kind].task
    if task == FILL_MASK:
        config["vocab_size"] = _shape(state, "perceiver.input_preprocessor.embeddings.weight", source)[0]
        config["max_position_embeddings"] = _shape(
            state, "perceiver.input_preprocessor.position_embeddings.weight", source)[0]
    elif task == CLASSIFY:
        num_labels = _shape(state, "perceiver.decoder.decoder.final_layer.weight", source)[0]
        learned = "perceiver.input_preprocessor.position_embeddings.position_embeddings"
        if learned in state:
            positions = _shape(state, learned, source)[0]
            side = int(round(positions ** 0.5))
            if side * side != positions:
                raise WeightsError(f"{source}: {positions} learned positions do not form a square image")
            config["image_size"] = side
        else:
            config.pop("image_size")  # only the learned-position classifier reads it
        config["id2label"] = _id2label(num_labels, IMAGENET_LABELS, "class")
    elif task == AUTOENCODE_VIDEO:
        prefix = "perceiver.output_postprocessor.modalities"
        num_labels, out_channels = _shape(state, f"{prefix}.label.classifier.weight", source)
        config["output_num_channels"] = out_channels
        config["samples_per_patch"] = _shape(state, f"{prefix}.audio.classifier.weight", source)[0]
        label_query = _shape(state, "perceiver.decoder.modalities.label.decoder.output_position_encodings."
                                    "position_embeddings", source)[1]
        if label_query != 1024:  # transformers' constant for DeepMind's network; smaller ones must say so
            config["_label_trainable_num_channels"] = label_query
        config["id2label"] = _id2label(num_labels, KINETICS_LABELS, "action")
    if "id2label" in config:
        config["label2id"] = {name: int(i) for i, name in config["id2label"].items()}
    return config


def convert_haiku_file(path: Path, kind: Optional[str] = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Read and convert one DeepMind file; returns (kind, hub-layout state dict, config.json dict)."""
    params = read_haiku_file(path)
    kind, state = to_hub_state_dict(params, kind, source=str(path))
    return kind, state, build_config(state, kind, source=str(path))
