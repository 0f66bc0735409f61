"""Small random checkpoints of the six Perceiver IO classes, made with transformers (our numeric oracle).

Every parameter and buffer is randomised (not transformers' zero biases and unit norms), so a weight that
lands in the wrong place changes the outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCH = {
    "language": "PerceiverForMaskedLM",
    "vision-learned": "PerceiverForImageClassificationLearned",
    "vision-fourier": "PerceiverForImageClassificationFourier",
    "vision-conv": "PerceiverForImageClassificationConvProcessing",
    "flow": "PerceiverForOpticalFlow",
    "multimodal": "PerceiverForMultimodalAutoencoding",
}

_COMMON = dict(num_latents=8, d_latents=32, num_self_attention_heads=4, num_cross_attention_heads=1,
               num_self_attends_per_block=2, num_blocks=1, attention_probs_dropout_prob=0.0)

TINY_CONFIGS = {
    "language": dict(_COMMON, d_model=32, qk_channels=16, v_channels=32, num_cross_attention_heads=2,
                     max_position_embeddings=64, vocab_size=262),
    "vision-learned": dict(_COMMON, num_blocks=2, image_size=16, id2label={i: f"class {i}" for i in range(10)}),
    "vision-fourier": dict(_COMMON, num_blocks=2, id2label={i: f"class {i}" for i in range(10)}),
    "vision-conv": dict(_COMMON, num_blocks=2, id2label={i: f"class {i}" for i in range(10)}),
    "flow": dict(_COMMON, num_latents=16, train_size=[8, 12]),
    "multimodal": dict(_COMMON, num_frames=2, image_size=8, audio_samples_per_frame=32, samples_per_patch=16,
                       output_shape=[1, 2, 16, 16], output_num_channels=32, _label_trainable_num_channels=16,
                       id2label={i: f"action {i}" for i in range(10)}),
}


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every float parameter and buffer random values (norm weights near 1, variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen) * 0.2
            if t.dim() >= 2:  # keep activations of order one, so float32 rounding stays far below 1e-4
                noise = noise * 5.0 / (t[0].numel() ** 0.5)
            if name.endswith("running_var"):
                t.copy_(noise.abs() + 0.5)
            elif "layernorm" in name and name.endswith("weight") or name.endswith("batchnorm.weight"):
                t.copy_(1.0 + noise)
            else:
                t.copy_(noise)


def make_hf_model(kind: str, seed: int = 0, **overrides):
    """A transformers Perceiver model of `kind` with a tiny config and random weights, in eval mode."""
    import transformers

    config = transformers.PerceiverConfig(**{**TINY_CONFIGS[kind], **overrides})
    config.architectures = [ARCH[kind]]
    torch.manual_seed(seed)
    model = getattr(transformers, ARCH[kind])(config).eval()
    randomise(model, seed)
    return model


def make_tiny_checkpoint(kind: str, directory: Path, seed: int = 0, safe: bool = True, **overrides):
    """Save a tiny random `kind` checkpoint to `directory`; returns the transformers model."""
    model = make_hf_model(kind, seed, **overrides)
    model.save_pretrained(str(directory))
    if not safe:  # the older hub layout: a torch pickle of tensors instead of safetensors
        torch.save(model.state_dict(), str(Path(directory) / "pytorch_model.bin"))
        (Path(directory) / "model.safetensors").unlink()
    return model
