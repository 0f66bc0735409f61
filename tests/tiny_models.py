"""Small random checkpoints of the six Perceiver IO classes, made with transformers (our numeric oracle).

Every parameter and buffer is randomised (not transformers' zero biases and unit norms), so a weight that
lands in the wrong place changes the outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from perceiver_cli.kinds import KINDS

# Each kind's class and tiny sizes come from its row (perceiver_cli.kinds).
ARCH = {kind.name: kind.architecture for kind in KINDS}
TINY_CONFIGS = {kind.name: dict(kind.tiny) for kind in KINDS}


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
