"""The multimodal autoencoder (video, sound and a label, Kinetics-700): its preprocessor, decoder and
postprocessor over the generic encoder and chunked decoder (core.trunk); module names are the hub's keys."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from perceiver_cli.core.decoding import DecoderMemory
from perceiver_cli.core.layers import Encoder, LatentEmbeddings, Linear
from perceiver_cli.core.position import fourier_features, grid_positions, subsampled_positions
from perceiver_cli.core.spec import Numerics, PerceiverSpec
from perceiver_cli.core.trunk import LearnedPositions, NamedParameters, QueryDecoder, Trunk, run_chunks
from perceiver_cli.kinds import fourier_size, input_widths




# ----------------------------------------------------------------------------------------------------------
# multimodal autoencoding: audio patches + video patches + an always-masked label.

MODALITIES = ("audio", "image", "label")  # sorted: the order of tokens and of queries


class MultimodalPreprocessor(nn.Module):
    def __init__(self, spec: PerceiverSpec):
        super().__init__()
        self.spec = spec
        widths = input_widths(spec)
        self.num_channels = c = widths["tokens"]
        self.padding = NamedParameters({m: (1, c - widths[m]) for m in MODALITIES})
        self.mask = NamedParameters({m: (1, c) for m in MODALITIES})

    def forward(self, images: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """images (B, T, 3, H, W), audio (B, S) or (B, S, 1) -> tokens (B, N_audio + N_image + 1, C)."""
        s = self.spec
        b, t, c, h, w = images.shape
        dtype = images.dtype
        audio = audio.reshape(b, -1, s.samples_per_patch)
        n_audio_samples = s.num_frames * s.audio_samples_per_frame
        pos = fourier_features(grid_positions((audio.shape[1],), device=audio.device), 192, (n_audio_samples,))
        audio_tokens = torch.cat([audio, pos.to(dtype).expand(b, -1, -1)], dim=-1)
        # space-to-depth by 4x4: channels ordered (dy, dx, rgb)
        patches = images.reshape(b, t, c, h // 4, 4, w // 4, 4).permute(0, 1, 3, 5, 4, 6, 2)
        patches = patches.reshape(b, t * (h // 4) * (w // 4), 16 * c)
        pos = fourier_features(grid_positions((t, h // 4, w // 4), device=images.device), 32,
                               (s.num_frames, s.image_size, s.image_size))
        image_tokens = torch.cat([patches, pos.to(dtype).expand(b, -1, -1)], dim=-1)

        def pad(x, name):
            fill = getattr(self.padding, name).to(dtype).expand(b, x.shape[1], -1)
            return torch.cat([x, fill], dim=-1)

        # The label is always masked: its token is the learned mask token, whatever the label input.
        label_token = getattr(self.mask, "label").to(dtype).expand(b, 1, -1)
        return torch.cat([pad(audio_tokens, "audio"), pad(image_tokens, "image"), label_token], dim=1)


class _LabelQuery(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.decoder = nn.Module()
        self.decoder.output_position_encodings = LearnedPositions(1, channels)


class MultimodalDecoder(nn.Module):
    def __init__(self, spec: PerceiverSpec, gelu: str):
        super().__init__()
        self.spec = spec
        self.audio_query_channels = fourier_size(1, 192)
        self.image_query_channels = fourier_size(3, 32)
        self.label_query_channels = spec.label_trainable_num_channels
        self.num_channels = max(self.audio_query_channels, self.image_query_channels, self.label_query_channels) + 2
        c = self.num_channels
        self.modalities = nn.Module()
        self.modalities.label = _LabelQuery(self.label_query_channels)
        self.decoder = QueryDecoder(c, spec.d_latents, spec.output_num_channels, query_residual=False,
                                    gelu_approximate=gelu, cross_shape=spec.cross_attention_shape_for_attention)
        self.padding = NamedParameters({"audio": (1, c - self.audio_query_channels),
                                        "image": (1, c - self.image_query_channels),
                                        "label": (1, c - self.label_query_channels)})

    def queries(self, modality: str, indices: Optional[torch.Tensor], batch: int, dtype, device,
                with_padding: bool = True) -> torch.Tensor:
        """Queries (B, Q, C) for flat output indices of one modality (the label has one query, indices ignored);
        without the modality's constant padding channels when with_padding is False."""
        s = self.spec
        if modality == "label":
            q = self.modalities.label.decoder.output_position_encodings.position_embeddings
        elif modality == "audio":
            n = s.num_frames * s.audio_samples_per_frame
            dims = (n // s.samples_per_patch,)
            q = fourier_features(subsampled_positions(indices.to(device), dims), 192, (n,))
        else:
            dims = tuple(s.output_shape[1:4])
            q = fourier_features(subsampled_positions(indices.to(device), dims), 32,
                                 (s.num_frames, s.image_size, s.image_size))
        q = q.to(dtype)
        if with_padding:
            q = torch.cat([q, getattr(self.padding, modality).to(dtype).expand(q.shape[0], -1)], dim=-1)
        return q.expand(batch, -1, -1)


class MultimodalPostprocessor(nn.Module):
    def __init__(self, spec: PerceiverSpec):
        super().__init__()
        self.modalities = nn.Module()
        for name, out in (("audio", spec.samples_per_patch), ("image", 3), ("label", spec.num_labels)):
            head = nn.Module()
            head.classifier = Linear(spec.output_num_channels, out)
            setattr(self.modalities, name, head)


class MultimodalAutoencoder(nn.Module):
    """deepmind/multimodal-perceiver: a clip of video + audio -> reconstructed video, audio and label logits."""

    def __init__(self, spec: PerceiverSpec, numerics: Numerics):
        super().__init__()
        self.spec = spec
        gelu = spec.gelu_approximate(numerics)
        pre = MultimodalPreprocessor(spec)
        self.perceiver = Trunk(pre, LatentEmbeddings(spec.num_latents, spec.d_latents),
                               Encoder(spec, kv_dim=pre.num_channels, gelu_approximate=gelu),
                               MultimodalDecoder(spec, gelu), MultimodalPostprocessor(spec))

    @property
    def num_outputs(self) -> dict[str, int]:
        """Number of decoder queries per modality for one clip."""
        s = self.spec
        return {"audio": s.num_frames * s.audio_samples_per_frame // s.samples_per_patch,
                "image": s.output_shape[1] * s.output_shape[2] * s.output_shape[3], "label": 1}

    def forward(self, images: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """images (B, T, 3, H, W), audio (B, S) -> the clip's label logits (B, 1, num_labels); reconstructions
        are decoded per modality from encode()'s latents."""
        return self.decode(self.encode(images, audio), "label")

    def encode(self, images: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """images (B, T, 3, H, W) in [0, 1], audio (B, S) in [-1, 1] -> latents (B, L, D). Runs once per clip."""
        return self.perceiver.encode(self.perceiver.input_preprocessor(images, audio))

    def memory(self, z: torch.Tensor, modality: str, num_queries: Optional[int] = None) -> DecoderMemory:
        """The latents' keys and values for `num_queries` of one modality's queries (None: all of them), its
        constant padding folded in."""
        pad = getattr(self.perceiver.decoder.padding, modality)[0].to(z.dtype)
        num_queries = self.num_outputs[modality] if num_queries is None else num_queries
        return self.perceiver.decoder.decoder.memory(z, num_queries, query_tail=pad)

    def decode(self, z: torch.Tensor, modality: str, indices: Optional[torch.Tensor] = None,
               memory: Optional[DecoderMemory] = None) -> torch.Tensor:
        """Raw outputs for flat indices of one modality: audio (B, Q, samples_per_patch), image (B, Q, 3),
        label (B, 1, num_labels). Pass `memory` (from memory(z, modality)) when decoding in chunks."""
        dec = self.perceiver.decoder
        if memory is None:
            memory = self.memory(z, modality, None if indices is None else indices.shape[-1])
        q = dec.queries(modality, indices, z.shape[0], z.dtype, z.device, with_padding=memory.query_tail is None)
        head = getattr(self.perceiver.output_postprocessor.modalities, modality).classifier
        return dec.decoder(q, memory=memory, post=head)

    def decode_chunked(self, z: torch.Tensor, modality: str, n: int, chunk_size: int) -> torch.Tensor:
        """Raw outputs for the first n flat indices of one modality, chunk_size queries a pass, from one memory."""
        memory = self.memory(z, modality, n)
        parts = run_chunks(lambda start: self.decode(z, modality, torch.arange(start, min(start + chunk_size, n),
                                                                                device=z.device), memory=memory),
                           range(0, n, chunk_size), z.device)
        return torch.cat(parts, dim=1)


# The classes the kinds' rows name (perceiver_cli.kinds.Kind.model).
