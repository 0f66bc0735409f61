"""Model configs the benchmarks run: the six hub checkpoints at full size, and tiny ones for --quick.

FULL_CONFIGS reproduces the six hub checkpoints' config.json files (everything not
listed is transformers' PerceiverConfig default); tests may import it from here.
"""

from __future__ import annotations

from typing import Any

# short name (perceiver_cli.core.spec kind) -> hub repository name under deepmind/
HUB_NAMES: dict[str, str] = {
    "language": "language-perceiver",
    "vision-learned": "vision-perceiver-learned",
    "vision-fourier": "vision-perceiver-fourier",
    "vision-conv": "vision-perceiver-conv",
    "flow": "optical-flow-perceiver",
    "multimodal": "multimodal-perceiver",
}

_VISION: dict[str, Any] = dict(num_latents=512, d_latents=1024, num_blocks=8, num_self_attends_per_block=6,
                               num_cross_attention_heads=1, num_self_attention_heads=8,
                               id2label={i: str(i) for i in range(1000)})

FULL_CONFIGS: dict[str, dict[str, Any]] = {
    "language": dict(architectures=["PerceiverForMaskedLM"], qk_channels=256, v_channels=1280),
    "vision-learned": dict(_VISION, architectures=["PerceiverForImageClassificationLearned"], d_model=512,
                           image_size=224),
    "vision-fourier": dict(_VISION, architectures=["PerceiverForImageClassificationFourier"], d_model=261),
    "vision-conv": dict(_VISION, architectures=["PerceiverForImageClassificationConvProcessing"], d_model=322),
    "flow": dict(architectures=["PerceiverForOpticalFlow"], num_latents=2048, d_latents=512, d_model=322,
                 num_self_attends_per_block=24, num_self_attention_heads=16, num_cross_attention_heads=1),
    "multimodal": dict(architectures=["PerceiverForMultimodalAutoencoding"], num_latents=784, d_latents=512,
                       d_model=704, num_self_attends_per_block=8, num_self_attention_heads=8,
                       num_cross_attention_heads=1, id2label={i: str(i) for i in range(700)}),
}

# The same six classes, small enough that every task runs in about a second (sizes, not speed, are real).
_TINY: dict[str, Any] = dict(num_latents=16, d_latents=64, num_self_attention_heads=4, num_cross_attention_heads=1,
                             num_self_attends_per_block=2, num_blocks=1)
# Narrow keys keep the cross-attention over 224x224 pixels cheap on both sides.
_TINY_VISION: dict[str, Any] = dict(_TINY, num_blocks=2, qk_channels=16, v_channels=64,
                                    id2label={i: str(i) for i in range(10)})

QUICK_CONFIGS: dict[str, dict[str, Any]] = {
    "language": dict(_TINY, architectures=["PerceiverForMaskedLM"], d_model=64, qk_channels=32, v_channels=64,
                     num_cross_attention_heads=2, max_position_embeddings=512),
    "vision-learned": dict(_TINY_VISION, architectures=["PerceiverForImageClassificationLearned"], d_model=512,
                           image_size=224),
    "vision-fourier": dict(_TINY_VISION, architectures=["PerceiverForImageClassificationFourier"], d_model=261),
    "vision-conv": dict(_TINY_VISION, architectures=["PerceiverForImageClassificationConvProcessing"], d_model=322),
    "flow": dict(_TINY, architectures=["PerceiverForOpticalFlow"], d_model=322, train_size=[24, 32]),
    "multimodal": dict(_TINY, architectures=["PerceiverForMultimodalAutoencoding"], num_frames=2,
                       image_size=8, audio_samples_per_frame=64, samples_per_patch=16, output_shape=[1, 2, 32, 32],
                       output_num_channels=32, _label_trainable_num_channels=16,
                       id2label={i: str(i) for i in range(10)}),
}


def configs(quick: bool) -> dict[str, dict[str, Any]]:
    """The configs of one benchmark run: tiny ones with --quick, else the hub checkpoints' sizes."""
    return QUICK_CONFIGS if quick else FULL_CONFIGS
