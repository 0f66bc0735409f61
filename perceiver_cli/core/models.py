"""The six Perceiver IO checkpoint classes over one generic encoder and one chunked decoder (core.trunk); the
multimodal autoencoder's parts are in core.multimodal.

Module names reproduce the hub checkpoints' state_dict keys exactly (tests/data/hub-keys lists them), so
weights load strictly by name. Each model documents its forward inputs and outputs.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_cli.choices import DEFAULT_CHUNK_SIZE
from perceiver_cli.core.layers import Encoder, LatentEmbeddings, Linear, in_passes, onednn_linear_available
from perceiver_cli.core.position import fourier_features, grid_positions, write_grid_fourier
from perceiver_cli.core.spec import NUMERICS, Numerics, PerceiverSpec, input_channels
from perceiver_cli.core.trunk import LearnedPositions, QueryDecoder, Trunk
from perceiver_cli.kinds import input_widths
from perceiver_cli.core.multimodal import MultimodalAutoencoder


def _gelu(spec: PerceiverSpec, numerics: Numerics) -> str:
    return spec.gelu_approximate(numerics)


# ----------------------------------------------------------------------------------------------------------
# language: UTF-8 bytes + 6 with learned positions; decoder queries are learned per output position.

class _Table(nn.Module):
    """A lookup table with key `weight`, like nn.Embedding but with no random initialisation: every model is
    built on the meta device and gets its weights from a checkpoint, and nn.Embedding's normal_() on the meta
    device imports torch's compiler stack (about a second of start-up)."""

    def __init__(self, rows: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, channels))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class TextPreprocessor(nn.Module):
    def __init__(self, spec: PerceiverSpec):
        super().__init__()
        self.embeddings = _Table(spec.vocab_size, spec.d_model)
        self.position_embeddings = _Table(spec.max_position_embeddings, spec.d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, N) -> (B, N, d_model)."""
        return self.embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]]


class EmbeddingDecoder(nn.Module):
    """Logits from decoder outputs through the (tied) input byte embeddings, plus a bias."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))


class MaskedLanguageModel(nn.Module):
    """deepmind/language-perceiver (PerceiverForMaskedLM)."""

    def __init__(self, spec: PerceiverSpec, numerics: Numerics):
        super().__init__()
        self.spec = spec
        gelu = _gelu(spec, numerics)
        self.perceiver = Trunk(
            TextPreprocessor(spec), LatentEmbeddings(spec.num_latents, spec.d_latents),
            Encoder(spec, kv_dim=spec.d_model, gelu_approximate=gelu),
            # The checkpoint's decoder: 8 heads of 32 query/key channels, values as wide as d_model.
            QueryDecoder(spec.d_model, spec.d_latents, None, qk_channels=8 * 32, v_channels=spec.d_model,
                         num_heads=8, query_residual=False, gelu_approximate=gelu,
                         cross_shape=spec.cross_attention_shape_for_attention,
                         learned_queries=(spec.max_position_embeddings, spec.d_model)),
        )
        self.embedding_decoder = EmbeddingDecoder(spec.vocab_size)

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids (B, N) long, attention_mask (B, N) (nonzero = real byte) -> latents (B, L, D)."""
        mask = None if attention_mask is None else attention_mask.to(torch.bool)
        inputs = self.perceiver.input_preprocessor(input_ids)
        return self.perceiver.encode(inputs, mask)

    def decode(self, z: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (B, P, vocab) at byte positions (P,) or (B, P) only."""
        table = self.perceiver.decoder.output_position_encodings.position_embeddings
        queries = table[positions].to(z.dtype)
        if queries.dim() == 2:
            queries = queries.expand(z.shape[0], -1, -1)
        hidden = self.perceiver.decoder(queries, z)
        weight = self.perceiver.input_preprocessor.embeddings.weight
        # logits in fp32 at least: the exact top-k search ranks their log-probabilities
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        return hidden.to(dtype) @ weight.t().to(dtype) + self.embedding_decoder.bias.to(dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (B, P, vocab) at `positions` (default: every input position)."""
        z = self.encode(input_ids, attention_mask)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.decode(z, positions)


# ----------------------------------------------------------------------------------------------------------
# vision: three input adapters, one classification decoder.

def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvDownsample(nn.Module):
    """7x7/2 conv (no bias) + BatchNorm + ReLU + 3x3/2 max-pool (key prefix `convnet`)."""

    def __init__(self, out_channels: int, numerics: Numerics):
        super().__init__()
        self.numerics = numerics
        self.conv = nn.Conv2d(3, out_channels, kernel_size=7, stride=2, bias=False)
        self.batchnorm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> (B, C, H', W')."""
        weight = self.conv.weight
        if self.numerics.untranspose_conv_kernel:
            weight = weight.transpose(2, 3)
        if self.numerics.tf_same_conv:
            (top, bottom), (left, right) = _tf_same_padding(x.shape[2], 7, 2), _tf_same_padding(x.shape[3], 7, 2)
            x = F.pad(x, (left, right, top, bottom))
        else:
            x = F.pad(x, (3, 3, 3, 3))
        x = F.relu(self.batchnorm(F.conv2d(x, weight, stride=2)))
        if self.numerics.tf_same_conv:
            (top, bottom), (left, right) = _tf_same_padding(x.shape[2], 3, 2), _tf_same_padding(x.shape[3], 3, 2)
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, kernel_size=3, stride=2)


class ImagePreprocessor(nn.Module):
    """pixels (B, 3, H, W) -> tokens (B, N, C) with positions, for the three ImageNet checkpoints.

    `stem` is what meets the pixels: "learned" (a 1x1 conv, learned positions), "conv" (conv + max-pool,
    Fourier positions) or "pixels" (the pixels themselves, Fourier positions).
    """

    def __init__(self, spec: PerceiverSpec, numerics: Numerics, stem: str):
        super().__init__()
        self.stem = stem
        widths = input_widths(spec)
        if stem == "learned":
            self.convnet_1x1 = nn.Conv2d(3, widths["pixels"], kernel_size=1)
            self.position_embeddings = LearnedPositions(spec.image_size ** 2, widths["positions"])
            self.positions_projection = Linear(widths["positions"], widths["positions"])
            self.max_resolution = None
        elif stem == "conv":
            self.convnet = ConvDownsample(widths["pixels"], numerics)
            self.max_resolution = (56, 56)
        else:
            self.max_resolution = (224, 224)

    def positions(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """The learned stem's projected position embeddings (N, 256), the same for every image: compute them
        once for a batch and pass them to forward. None for the other kinds (their positions are cheap)."""
        if self.stem != "learned":
            return None
        return self.positions_projection(self.position_embeddings.position_embeddings.to(dtype))

    def forward(self, pixels: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.stem == "learned":
            x = self.convnet_1x1(pixels)
        elif self.stem == "conv":
            x = self.convnet(pixels)
        else:
            x = pixels
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.stem == "learned":
            pos = self.positions(x.dtype) if positions is None else positions
        else:
            pos = fourier_features(grid_positions((h, w), device=x.device), 64, self.max_resolution).to(x.dtype)
        return torch.cat([tokens, pos.expand(b, -1, -1)], dim=-1)


class ClassificationDecoder(nn.Module):
    """One learned query -> class logits (key prefix `decoder.decoder`)."""

    def __init__(self, spec: PerceiverSpec, gelu: str, query_residual: bool):
        super().__init__()
        self.decoder = QueryDecoder(spec.d_latents, spec.d_latents, spec.num_labels, query_residual=query_residual,
                                    gelu_approximate=gelu, cross_shape=spec.cross_attention_shape_for_attention,
                                    learned_queries=(1, spec.d_latents))


class ImageClassifier(nn.Module):
    """deepmind/vision-perceiver-{learned,fourier,conv}: pixels (B, 3, 224, 224) normalised -> logits (B, labels)."""

    def __init__(self, spec: PerceiverSpec, numerics: Numerics, stem: str):
        super().__init__()
        self.spec = spec
        gelu = _gelu(spec, numerics)
        residual = numerics.learned_decoder_query_residual if stem == "learned" else True
        self.perceiver = Trunk(
            ImagePreprocessor(spec, numerics, stem), LatentEmbeddings(spec.num_latents, spec.d_latents),
            Encoder(spec, kv_dim=input_channels(spec), gelu_approximate=gelu),
            ClassificationDecoder(spec, gelu, residual),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) -> logits (B, num_labels).

        Images are independent: on CPU they go through the whole network a few at a time (layers.in_passes),
        so memory does not grow with the batch.
        """
        positions = self.perceiver.input_preprocessor.positions(pixel_values.dtype)  # once a call
        return in_passes(lambda part: self.decode(self._latents(part, positions)), self.spec.num_latents,
                         pixel_values)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) -> latents (B, L, D), the latent stack's output the decoder reads."""
        positions = self.perceiver.input_preprocessor.positions(pixel_values.dtype)
        return in_passes(lambda part: self._latents(part, positions), self.spec.num_latents, pixel_values)

    def _latents(self, pixel_values: torch.Tensor, positions: Optional[torch.Tensor]) -> torch.Tensor:
        trunk = self.perceiver
        latents = trunk.embeddings.latents.to(pixel_values.dtype)[None]
        # An image's input tokens are the largest tensors (50,176 x 261 for vision-fourier): cross-attend one
        # image at a time, then run the latent stack on the images together.
        z = torch.cat([trunk.encoder.cross_attention(latents, kv=trunk.input_preprocessor(image[None], positions))
                       for image in pixel_values])
        return trunk.encoder.process(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, L, D) -> logits (B, num_labels)."""
        decoder = self.perceiver.decoder.decoder
        query = decoder.output_position_encodings.position_embeddings.to(z.dtype).expand(z.shape[0], -1, -1)
        return decoder(query, z)[:, 0, :]


# ----------------------------------------------------------------------------------------------------------
# optical flow: 3x3 patches of two frames; the decoder's queries are the encoder's inputs.

class FlowPreprocessor(nn.Module):
    def __init__(self, spec: PerceiverSpec):
        super().__init__()
        self.train_size = tuple(spec.train_size)
        self.widths = input_widths(spec)
        self.conv_after_patches = Linear(54, self.widths["patches"])

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, 2, 27, H, W) -> tokens (B, H*W, 64 + Fourier channels)."""
        b, t, c, h, w = patches.shape
        x = self.conv_after_patches(patches.permute(0, 3, 4, 1, 2).reshape(b, h * w, t * c))
        # the positions written straight into the tokens: no grid of them, no concatenation
        tokens = x.new_empty(b, h, w, self.widths["tokens"])
        tokens[..., :self.widths["patches"]] = x.view(b, h, w, -1)
        write_grid_fourier(tokens[..., self.widths["patches"]:], 64, self.train_size)
        return tokens.view(b, h * w, -1)


class FlowDecoder(nn.Module):
    def __init__(self, spec: PerceiverSpec, gelu: str):
        super().__init__()
        # The decoder's queries are the encoder's input tokens.
        self.decoder = QueryDecoder(input_channels(spec), spec.d_latents, 2, query_residual=False,
                                    gelu_approximate=gelu, cross_shape=spec.cross_attention_shape_for_attention)


class OpticalFlowModel(nn.Module):
    """deepmind/optical-flow-perceiver: one window of two frames' patches -> flow (unscaled, as transformers)."""

    rescale_factor = 100.0

    def __init__(self, spec: PerceiverSpec, numerics: Numerics):
        super().__init__()
        self.spec = spec
        gelu = _gelu(spec, numerics)
        self.perceiver = Trunk(FlowPreprocessor(spec), LatentEmbeddings(spec.num_latents, spec.d_latents),
                               Encoder(spec, kv_dim=input_channels(spec), gelu_approximate=gelu),
                               FlowDecoder(spec, gelu))

    def forward(self, patches: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
        """patches (B, 2, 27, H, W) in [-1, 1] -> flow (B, H, W, 2) / FLOW_SCALE_FACTOR (transformers' output)."""
        b, _, _, h, w = patches.shape
        tokens = self.perceiver.input_preprocessor(patches)
        z = self.perceiver.encode(tokens)
        # the decoder's head computes in fp32 at least
        out = tokens.new_empty(b, h * w, 2, dtype=torch.promote_types(tokens.dtype, torch.float32))
        decoder = self.perceiver.decoder.decoder
        for start, chunk in decoder.decode_in_chunks(z, h * w, lambda s, e: tokens[:, s:e], chunk_size):
            out[:, start:start + chunk.shape[1]] = chunk
        return (out / self.rescale_factor).reshape(b, h, w, 2)

MODEL_CLASSES = {cls.__name__: cls for cls in (MaskedLanguageModel, ImageClassifier, OpticalFlowModel,
                                               MultimodalAutoencoder)}


def build_model(spec: PerceiverSpec, numerics: str | Numerics = "deepmind") -> nn.Module:
    """An untrained model of the spec's class (perceiver_cli.load.load_model loads weights)."""
    if isinstance(numerics, str):
        numerics = NUMERICS[numerics]
    onednn_linear_available()  # the engine decided now: a bad PERCEIVER_CLI_CPU_MATMUL stops before any input
    row = spec.row
    return MODEL_CLASSES[row.model](spec, numerics, **row.model_options)
