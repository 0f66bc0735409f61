"""The six checkpoint kinds, one row each: a kind's config class, model class, task, input widths, size checks,
example input, preprocessing, Haiku key table and tiny test sizes are declared here once, and every other list
of kinds (the commands' --model choices, core's model table, the importer's tables, the tests' tiny configs)
derives from these rows.

Standard library only: the commands read their choices here without importing torch, and io, core and weights
all read it. Rows refer to a model class by its name in perceiver_cli.core.models, which builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

Shapes = tuple[tuple[tuple[int, ...], str], ...]  # positional inputs as (shape, torch dtype name)


def fourier_size(num_dims: int, num_bands: int) -> int:
    """Channels of Fourier position features: the positions, then a sine and a cosine per band and axis."""
    return num_dims * (2 * num_bands + 1)


@dataclass(frozen=True)
class ImagePreprocessing:
    """A classifier's input: the centre square of crop[0]/crop[1] of the short side, resized to size x size
    (bicubic, uint8), times `rescale`, then (x - mean) / std per channel."""

    size: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255


# ImageNet evaluation since AlexNet: a 224/256 centre crop; transformers' PerceiverImageProcessor values.
IMAGENET = ImagePreprocessing(224, (224, 256), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class HaikuTable:
    """DeepMind's Haiku module names of one kind: `marker` matches a module path only files of this kind have
    (unless a module matches `unless`); `rules` are (module pattern, hub key, style) as weights.haiku reads them,
    after the encoder's rules that every kind shares."""

    marker: str
    rules: tuple[tuple[str, str, str], ...]
    unless: str = ""


def _no_problems(spec: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Kind:
    """One checkpoint kind. `widths(spec)` are the encoder's input tokens ("tokens") and the parts they are
    made of; `example_input(spec)` the smallest input of the model's forward; `sizes` the config fields that
    must be positive integers besides the common ones, `check(spec)` the kind's other size problems."""

    name: str
    architecture: str
    task: str
    model: str
    widths: Callable[[Any], dict[str, int]]
    example_input: Callable[[Any], Shapes]
    haiku: HaikuTable
    tiny: dict[str, Any] = field(compare=False)
    sizes: tuple[str, ...] = ()
    check: Callable[[Any], list[str]] = _no_problems
    model_options: dict[str, Any] = field(default_factory=dict, compare=False)
    preprocessing: Optional[ImagePreprocessing] = None
    paper_top1: Optional[float] = None  # ImageNet top-1 (%) the paper gives, trained on ImageNet alone
    # The published checkpoint's data shapes where `tiny` differs (`perceiver weights tiny` keeps them real).
    real_shapes: dict[str, Any] = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------------------------------- input widths

def _language_widths(spec: Any) -> dict[str, int]:
    return {"tokens": spec.d_model}


def _image_widths(pixels: int, positions: int) -> Callable[[Any], dict[str, int]]:
    return lambda spec: {"pixels": pixels, "positions": positions, "tokens": pixels + positions}


def _flow_widths(spec: Any) -> dict[str, int]:
    return {"patches": 64, "positions": fourier_size(2, 64), "tokens": 64 + fourier_size(2, 64)}


def _multimodal_widths(spec: Any) -> dict[str, int]:
    """Each modality's tokens before padding; all are padded to the widest plus 4 learned channels."""
    parts = {"audio": spec.samples_per_patch + fourier_size(1, 192), "image": 4 * 4 * 3 + fourier_size(3, 32),
             "label": spec.num_labels}
    return {**parts, "tokens": max(parts.values()) + 4}


# ---------------------------------------------------------------------------------------------- size checks

def _check_language(spec: Any) -> list[str]:
    problems = []
    if spec.d_model % 8:  # the checkpoint's decoder has 8 heads whose values are d_model wide
        problems.append(f"d_model {spec.d_model} does not split into the language decoder's 8 heads")
    if spec.vocab_size < 262:
        problems.append(f"vocab_size {spec.vocab_size} is smaller than the 262 byte-level tokens")
    return problems


def _check_flow(spec: Any) -> list[str]:
    if len(spec.train_size) != 2 or min(spec.train_size) < 1:
        return [f"train_size {list(spec.train_size)} is not [height, width] in pixels"]
    return []


def _check_multimodal(spec: Any) -> list[str]:
    problems = []
    shape = tuple(spec.output_shape)
    if len(shape) != 4 or shape[1] != spec.num_frames or shape[2] != shape[3] or shape[2] % 4:
        problems.append(f"output_shape {list(shape)} is not [1, num_frames, size, size] with num_frames "
                        f"{spec.num_frames} and size a multiple of 4")
    if (spec.num_frames * spec.audio_samples_per_frame) % spec.samples_per_patch:
        problems.append(f"num_frames {spec.num_frames} x audio_samples_per_frame {spec.audio_samples_per_frame} "
                        f"samples do not split into samples_per_patch {spec.samples_per_patch}")
    return problems


# ---------------------------------------------------------------------------------------------- Haiku names

_CLASSIFIER_RULES = (
    ("classification_decoder/~/basic_decoder/cross_attention/(?P<inner>.+)",
     "perceiver.decoder.decoder.decoding_cross_attention", "cross"),
    ("classification_decoder/~/basic_decoder/output", "perceiver.decoder.decoder.final_layer", "dense"),
    ("classification_decoder/~/basic_decoder/~/trainable_position_encoding",
     "perceiver.decoder.decoder.output_position_encodings.position_embeddings", "leaf:pos_embs"),
)
_MODALITY = "(?P<m>audio|image|label)"
_CONV = "image_preprocessor/~/conv2_d_downsample/~/"

_LANGUAGE_HAIKU = HaikuTable("embedding_decoder|embed", (
    ("embed", "perceiver.input_preprocessor.embeddings.weight", "leaf:embeddings"),
    ("trainable_position_encoding", "perceiver.input_preprocessor.position_embeddings.weight", "leaf:pos_embs"),
    ("basic_decoder/cross_attention/(?P<inner>.+)", "perceiver.decoder.decoding_cross_attention", "cross"),
    ("basic_decoder/~/trainable_position_encoding", "perceiver.decoder.output_position_encodings."
     "position_embeddings", "leaf:pos_embs"),
    ("embedding_decoder", "embedding_decoder.bias", "leaf:bias"),
))
_CONV_HAIKU = HaikuTable(_CONV + ".*", (
    (_CONV + "conv", "perceiver.input_preprocessor.convnet.conv", "dense"),
    (_CONV + "batchnorm", "perceiver.input_preprocessor.convnet.batchnorm", "batchnorm"),
    (_CONV + "batchnorm/~/mean_ema", "perceiver.input_preprocessor.convnet.batchnorm.running_mean", "ema"),
    (_CONV + "batchnorm/~/var_ema", "perceiver.input_preprocessor.convnet.batchnorm.running_var", "ema"),
    *_CLASSIFIER_RULES,
))
# The Fourier classifier has no preprocessor parameters: it is the classifier with no other network's marks.
_FOURIER_HAIKU = HaikuTable("classification_decoder/.*", _CLASSIFIER_RULES,
                            unless="image_preprocessor/.*|multimodal_.*|flow_decoder/.*")
_LEARNED_HAIKU = HaikuTable("image_preprocessor/~/conv2_d", (
    ("image_preprocessor/~/conv2_d", "perceiver.input_preprocessor.convnet_1x1", "dense"),
    ("image_preprocessor/~_build_network_inputs/trainable_position_encoding",
     "perceiver.input_preprocessor.position_embeddings.position_embeddings", "leaf:pos_embs"),
    ("image_preprocessor/~_build_network_inputs/position_encoding_projector/linear",
     "perceiver.input_preprocessor.positions_projection", "dense"),
    *_CLASSIFIER_RULES,
))
_FLOW_HAIKU = HaikuTable("flow_decoder/.*", (
    ("image_preprocessor/patches_linear", "perceiver.input_preprocessor.conv_after_patches", "dense"),
    ("flow_decoder/~/basic_decoder/cross_attention/(?P<inner>.+)",
     "perceiver.decoder.decoder.decoding_cross_attention", "cross"),
    ("flow_decoder/~/basic_decoder/output", "perceiver.decoder.decoder.final_layer", "dense"),
))
_MULTIMODAL_HAIKU = HaikuTable("multimodal_(?:preprocessor|decoder)/.*", (
    (f"multimodal_preprocessor/{_MODALITY}_padding", "perceiver.input_preprocessor.padding.{m}", "leaf:pos_embs"),
    (f"multimodal_preprocessor/{_MODALITY}_mask_token", "perceiver.input_preprocessor.mask.{m}", "leaf:pos_embs"),
    ("multimodal_decoder/~/basic_decoder/cross_attention/(?P<inner>.+)",
     "perceiver.decoder.decoder.decoding_cross_attention", "cross"),
    ("multimodal_decoder/~/basic_decoder/output", "perceiver.decoder.decoder.final_layer", "dense"),
    (f"multimodal_decoder/~decoder_query/{_MODALITY}_padding", "perceiver.decoder.padding.{m}", "leaf:pos_embs"),
    ("classification_decoder/~/basic_decoder/~/trainable_position_encoding",
     "perceiver.decoder.modalities.label.decoder.output_position_encodings.position_embeddings", "leaf:pos_embs"),
    ("audio_postprocessor/linear", "perceiver.output_postprocessor.modalities.audio.classifier", "dense"),
    ("projection_postprocessor/linear", "perceiver.output_postprocessor.modalities.image.classifier", "dense"),
    ("classification_postprocessor/linear", "perceiver.output_postprocessor.modalities.label.classifier",
     "dense"),
))

# ---------------------------------------------------------------------------------------------- the rows

# Tiny sizes of every kind, for tests and for trying a new kind quickly.
_TINY = dict(num_latents=8, d_latents=32, num_self_attention_heads=4, num_cross_attention_heads=1,
             num_self_attends_per_block=2, num_blocks=1, attention_probs_dropout_prob=0.0)


def _tiny_labels(word: str) -> dict[int, str]:
    return {i: f"{word} {i}" for i in range(10)}


def _image_input(side: Optional[int] = None) -> Callable[[Any], Shapes]:
    """One image of `side` pixels (None: the spec's image_size)."""
    return lambda spec: (((1, 3, side or spec.image_size, side or spec.image_size), "float32"),)


def _clip_input(spec: Any) -> Shapes:
    """One clip: its frames (1, T, 3, H, W) and its sound (1, samples)."""
    return (((1, spec.num_frames, 3, spec.output_shape[2], spec.output_shape[3]), "float32"),
            ((1, spec.num_frames * spec.audio_samples_per_frame), "float32"))


# The tasks' names, which are also their commands' names (`perceiver flow`, `perceiver eval flow`).
FILL_MASK, CLASSIFY, FLOW, AUTOENCODE_VIDEO = "fill-mask", "classify", "flow", "autoencode-video"

KINDS: tuple[Kind, ...] = (
    Kind(name="language", architecture="PerceiverForMaskedLM", task=FILL_MASK, model="MaskedLanguageModel",
         widths=_language_widths, example_input=lambda spec: (((1, min(8, spec.max_position_embeddings)), "long"),),
         haiku=_LANGUAGE_HAIKU, sizes=("vocab_size", "max_position_embeddings"), check=_check_language,
         tiny=dict(_TINY, d_model=32, qk_channels=16, v_channels=32, num_cross_attention_heads=2,
                   max_position_embeddings=64, vocab_size=262),
         real_shapes=dict(max_position_embeddings=2048)),
    Kind(name="vision-conv", architecture="PerceiverForImageClassificationConvProcessing", task=CLASSIFY,
         model="ImageClassifier", model_options={"stem": "conv"}, preprocessing=IMAGENET,
         widths=_image_widths(64, fourier_size(2, 64)), example_input=_image_input(32), haiku=_CONV_HAIKU,
         tiny=dict(_TINY, num_blocks=2, id2label=_tiny_labels("class")), paper_top1=82.1),
    Kind(name="vision-fourier", architecture="PerceiverForImageClassificationFourier", task=CLASSIFY,
         model="ImageClassifier", model_options={"stem": "pixels"}, preprocessing=IMAGENET,
         widths=_image_widths(3, fourier_size(2, 64)), example_input=_image_input(32), haiku=_FOURIER_HAIKU,
         tiny=dict(_TINY, num_blocks=2, id2label=_tiny_labels("class")), paper_top1=79.0),
    Kind(name="vision-learned", architecture="PerceiverForImageClassificationLearned", task=CLASSIFY,
         model="ImageClassifier", model_options={"stem": "learned"}, preprocessing=IMAGENET,
         widths=_image_widths(256, 256), example_input=_image_input(), haiku=_LEARNED_HAIKU, sizes=("image_size",),
         tiny=dict(_TINY, num_blocks=2, image_size=16, id2label=_tiny_labels("class")), paper_top1=72.7,
         real_shapes=dict(image_size=224)),
    Kind(name="flow", architecture="PerceiverForOpticalFlow", task=FLOW, model="OpticalFlowModel",
         widths=_flow_widths, example_input=lambda spec: (((1, 2, 27, 2, 3), "float32"),), haiku=_FLOW_HAIKU,
         check=_check_flow, tiny=dict(_TINY, num_latents=16, train_size=[8, 12]),
         real_shapes=dict(train_size=[368, 496])),
    Kind(name="multimodal", architecture="PerceiverForMultimodalAutoencoding", task=AUTOENCODE_VIDEO,
         model="MultimodalAutoencoder", widths=_multimodal_widths, example_input=_clip_input, haiku=_MULTIMODAL_HAIKU,
         sizes=("num_frames", "audio_samples_per_frame", "samples_per_patch", "image_size", "output_num_channels",
                "label_trainable_num_channels"), check=_check_multimodal,
         tiny=dict(_TINY, num_frames=2, image_size=8, audio_samples_per_frame=32, samples_per_patch=16,
                   output_shape=[1, 2, 16, 16], output_num_channels=32, _label_trainable_num_channels=16,
                   id2label=_tiny_labels("action")),
         real_shapes=dict(num_frames=16, image_size=224, audio_samples_per_frame=1920, samples_per_patch=16,
                          output_shape=[1, 16, 224, 224])),
)

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
BY_ARCHITECTURE: dict[str, Kind] = {kind.architecture: kind for kind in KINDS}


def names_for_task(task: str) -> tuple[str, ...]:
    """The kinds a task runs, in the rows' order (the first is the task's default)."""
    return tuple(kind.name for kind in KINDS if kind.task == task)


def input_widths(spec: Any) -> dict[str, int]:
    """The widths of a spec's encoder input: "tokens" (what the encoder's cross-attention reads) and its parts."""
    return BY_ARCHITECTURE[spec.architecture].widths(spec)
