"""The six checkpoint classes as data: what a Hugging Face `config.json` says, and how we compute it.

Every size comes from the config, so smaller configs of the same six classes build as well as the
real ones. Defaults are those of transformers' PerceiverConfig (the hub configs only store what differs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from perceiver_cli.bounds import check_config_sizes
from perceiver_cli.errors import UsageError
from perceiver_cli.kinds import BY_ARCHITECTURE, Kind, input_widths

# architectures[0] in config.json -> (kind, task), from the kinds' rows
ARCHITECTURES: dict[str, tuple[str, str]] = {arch: (row.name, row.task) for arch, row in BY_ARCHITECTURE.items()}

# DeepMind's optical-flow colab multiplies the decoder output by this to get pixels.
FLOW_SCALE_FACTOR = 20.0
# Layer norms are built with torch's default epsilon (config.layer_norm_eps is never used by the port).
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class Numerics:
    """The documented differences between DeepMind's networks and transformers' port, one switch each.

    - gelu_approximate: DeepMind's MLPs use the tanh approximation of GELU ("tanh"); the port uses exact
      erf ("none", or whatever the config's hidden_act says).
    - tf_same_conv: DeepMind's conv preprocessing pads TF-SAME for the 7x7/2 conv (2 before, 3 after on a
      224 input) and for the 3x3/2 max-pool (0 before, 1 after), giving 56x56 tokens; the port pads 3/3 and
      does not pad the pool, giving 55x55.
    - untranspose_conv_kernel: the port's converter reversed all axes of Haiku's HWIO 7x7 kernel, so the
      stored kernel is (out, in, kw, kh); DeepMind's network uses it transposed back to (out, in, kh, kw).
    - learned_decoder_query_residual: the port adds the query back in the learned-position classifier's
      decoder; DeepMind's decoder for that checkpoint has no query residual.
    """

    gelu_approximate: Optional[str]  # None: follow config.hidden_act
    tf_same_conv: bool
    untranspose_conv_kernel: bool
    learned_decoder_query_residual: bool


NUMERICS: dict[str, Numerics] = {
    "deepmind": Numerics(gelu_approximate="tanh", tf_same_conv=True, untranspose_conv_kernel=True,
                         learned_decoder_query_residual=False),
    "transformers": Numerics(gelu_approximate=None, tf_same_conv=False, untranspose_conv_kernel=False,
                             learned_decoder_query_residual=True),
}

_HIDDEN_ACT = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


@dataclass(frozen=True)
class PerceiverSpec:
    """Sizes of one Perceiver IO network, read from a Hugging Face config."""

    architecture: str
    num_latents: int = 256
    d_latents: int = 1280
    d_model: int = 768
    num_blocks: int = 1
    num_self_attends_per_block: int = 26
    num_self_attention_heads: int = 8
    num_cross_attention_heads: int = 8
    qk_channels: Optional[int] = None
    v_channels: Optional[int] = None
    cross_attention_shape_for_attention: str = "kv"
    self_attention_widening_factor: int = 1
    cross_attention_widening_factor: int = 1
    hidden_act: str = "gelu"
    use_query_residual: bool = True
    vocab_size: int = 262
    max_position_embeddings: int = 2048
    image_size: int = 56
    train_size: tuple[int, int] = (368, 496)
    num_frames: int = 16
    audio_samples_per_frame: int = 1920
    samples_per_patch: int = 16
    output_shape: tuple[int, ...] = (1, 16, 224, 224)
    output_num_channels: int = 512
    label_trainable_num_channels: int = 1024
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def row(self) -> Kind:
        """Everything declared about this spec's kind (perceiver_cli.kinds)."""
        return BY_ARCHITECTURE[self.architecture]

    @property
    def kind(self) -> str:
        return self.row.name

    @property
    def task(self) -> str:
        return self.row.task

    def gelu_approximate(self, numerics: Numerics) -> str:
        """'tanh' or 'none' for torch.nn.functional.gelu under the given numerics."""
        if numerics.gelu_approximate is not None:
            return numerics.gelu_approximate
        if self.hidden_act not in _HIDDEN_ACT:
            raise InvalidConfig(f"unsupported hidden_act '{self.hidden_act}' in config.json")
        return _HIDDEN_ACT[self.hidden_act]


class InvalidConfig(UsageError):
    """A config that names no Perceiver IO class, or whose sizes the network cannot run; names the fields."""


def input_channels(spec: PerceiverSpec) -> int:
    """The width of the tokens the encoder's cross-attention reads (its keys' and values' input width)."""
    return input_widths(spec)["tokens"]


def _attention_widths(qk: Optional[int], v: Optional[int], default: int) -> tuple[int, int]:
    qk = default if qk is None else qk
    return qk, qk if v is None else v


def check_spec(spec: PerceiverSpec) -> None:
    """Refuse sizes the network cannot run with one InvalidConfig naming the fields and their values."""
    problems: list[str] = []
    positive = ["num_latents", "d_latents", "d_model", "num_blocks", "num_self_attends_per_block",
                "num_self_attention_heads", "num_cross_attention_heads", "self_attention_widening_factor",
                "cross_attention_widening_factor", "num_labels"]
    positive += spec.row.sizes
    for name in positive + ["qk_channels", "v_channels"]:
        value = getattr(spec, name)
        if value is None and name in ("qk_channels", "v_channels"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name} {value!r} is not a positive integer")
    if problems:
        raise InvalidConfig(f"config.json: {'; '.join(problems)}")
    if spec.cross_attention_shape_for_attention not in ("kv", "q"):
        problems.append(f"cross_attention_shape_for_attention '{spec.cross_attention_shape_for_attention}' "
                        "is neither 'kv' nor 'q'")
    heads = spec.num_self_attention_heads
    qk, v = _attention_widths(spec.qk_channels, spec.v_channels, spec.d_latents)
    if qk % heads or v % heads:
        problems.append(f"self-attention widths qk {qk} and v {v} (qk_channels, v_channels, else d_latents) "
                        f"do not split into num_self_attention_heads {heads}")
    if v != spec.d_latents:
        problems.append(f"self-attention values of {v} channels (v_channels) cannot be added back to latents of "
                        f"d_latents {spec.d_latents}")
    heads = spec.num_cross_attention_heads
    kv_width = input_channels(spec)
    default = kv_width if spec.cross_attention_shape_for_attention == "kv" else spec.d_latents
    qk, v = _attention_widths(spec.qk_channels, spec.v_channels, default)
    if qk % heads or v % heads:
        problems.append(f"cross-attention widths qk {qk} and v {v} (qk_channels, v_channels, else the inputs' "
                        f"{kv_width} channels) do not split into num_cross_attention_heads {heads}")
    problems += spec.row.check(spec)
    if problems:
        raise InvalidConfig(f"config.json: {'; '.join(problems)}")


def spec_from_config(config: dict[str, Any]) -> PerceiverSpec:
    """Build a PerceiverSpec from a parsed config.json (its sizes are checked by check_spec); InvalidConfig for a
    config that names no Perceiver IO class or holds values of the wrong type."""
    check_config_sizes(config, InvalidConfig)
    archs = config.get("architectures") or []
    if not archs:
        raise InvalidConfig("config.json has no 'architectures' entry, so the model class is unknown")
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise InvalidConfig(f"config.json names '{arch}', which is not one of the six Perceiver IO classes "
                         f"({', '.join(sorted(ARCHITECTURES))})")
    kwargs: dict[str, Any] = {"architecture": arch}
    for name in PerceiverSpec.__dataclass_fields__:
        if name in ("architecture", "id2label", "label_trainable_num_channels", "num_labels"):
            continue
        if name in config and config[name] is not None:
            value = config[name]
            if name in ("train_size", "output_shape"):
                try:
                    value = tuple(int(v) for v in value)
                except (TypeError, ValueError):
                    raise InvalidConfig(f"config.json: {name} {value!r} is not a list of integers") from None
            kwargs[name] = value
    if "_label_trainable_num_channels" in config:
        kwargs["label_trainable_num_channels"] = int(config["_label_trainable_num_channels"])
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    kwargs["id2label"] = id2label
    kwargs["num_labels"] = len(id2label) if id2label else int(config.get("num_labels", 2))
    if isinstance(kwargs.get("image_size"), (list, tuple)):
        kwargs["image_size"] = int(kwargs["image_size"][0])
    try:
        return PerceiverSpec(**kwargs)
    except TypeError as exc:  # a value of the wrong type in config.json
        raise InvalidConfig(f"config.json is not a valid Perceiver config: {exc}") from None
