"""The six Perceiver IO checkpoint classes over one generic encoder and one chunked decoder.

Module names reproduce the hub checkpoints' state_dict keys exactly (tests/data/hub-keys lists them), so
weights load strictly by name. Each model documents its forward inputs and outputs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_cli.core.decoding import DecoderAttention, DecoderMemory
from perceiver_cli.core.layers import Encoder, LatentEmbeddings, Linear, in_passes, onednn_linear_available
from perceiver_cli.core.position import fourier_features, fourier_size, grid_positions, subsampled_positions
from perceiver_cli.core.spec import NUMERICS, Numerics, PerceiverSpec

# Decoder queries per chunk: bounds decoder memory whatever the number of outputs, and keeps a chunk's
# temporaries in the CPU's cache between one operation and the next.
DEFAULT_CHUNK_SIZE = 4096

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_chunks(fn: Callable[[Item], Result], items: Sequence[Item], device: torch.device) -> list[Result]:
    """[fn(item) for item in items], with the chunks shared out on a CPU that torch gives several threads.

    Decoder chunks are independent, and a decoder pass is many operations, several of them too small to
    keep several threads busy, so single-threaded workers each decoding their own chunks beat all threads on
    every operation of one chunk at a time. torch's thread count is set to one while the workers run and
    restored after (also on errors and Ctrl-C, when the chunks not yet started are dropped).
    """
    workers = torch.get_num_threads()
    if device.type != "cpu" or workers < 2 or len(items) < 2:
        return [fn(item) for item in items]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def job(item: Item) -> Result:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):  # both are per thread
            return fn(item)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="perceiver-decode")
    torch.set_num_threads(1)
    try:
        return list(pool.map(job, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(workers)


class LearnedPositions(nn.Module):
    """A learned position table (key `position_embeddings`), shape (N, C)."""

    def __init__(self, num_positions: int, channels: int):
        super().__init__()
        self.position_embeddings = nn.Parameter(torch.zeros(num_positions, channels))


class NamedParameters(nn.Module):
    """A few parameters addressed by name (checkpoint keys such as `padding.audio`)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))


class Trunk(nn.Module):
    """The shared `perceiver.*` part: input adapter, latents, encoder, decoder, output adapter."""

    def __init__(self, input_preprocessor: Optional[nn.Module], latents: LatentEmbeddings, encoder: Encoder,
                 decoder: nn.Module, output_postprocessor: Optional[nn.Module] = None):
        super().__init__()
        if input_preprocessor is not None:
            self.input_preprocessor = input_preprocessor
        self.embeddings = latents
        self.encoder = encoder
        self.decoder = decoder
        if output_postprocessor is not None:
            self.output_postprocessor = output_postprocessor

    def encode(self, inputs: torch.Tensor, inputs_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """inputs (B, N, C) -> latents (B, L, D); runs the encoder once."""
        latents = self.embeddings.latents.to(inputs.dtype).expand(inputs.shape[0], -1, -1)
        return self.encoder(latents, inputs, inputs_mask)


class QueryDecoder(nn.Module):
    """Cross-attends output queries to the latents, in chunks (queries never attend to each other)."""

    def __init__(self, query_dim: int, d_latents: int, out_channels: Optional[int], *,
                 qk_channels: Optional[int] = None, v_channels: Optional[int] = None, num_heads: int = 1,
                 query_residual: bool = False, gelu_approximate: str = "none", cross_shape: str = "kv",
                 learned_queries: Optional[tuple[int, int]] = None):
        super().__init__()
        if learned_queries is not None:
            self.output_position_encodings = LearnedPositions(*learned_queries)
        self.decoding_cross_attention = DecoderAttention(
            query_dim, d_latents, qk_channels=qk_channels, v_channels=v_channels, num_heads=num_heads,
            widening_factor=1, query_residual=query_residual, gelu_approximate=gelu_approximate,
            cross_shape=cross_shape,
        )
        if out_channels is not None:
            self.final_layer = Linear(query_dim, out_channels)

    def memory(self, z: torch.Tensor, num_queries: Optional[int] = None,
               query_tail: Optional[torch.Tensor] = None) -> DecoderMemory:
        """The latents' keys and values, computed once and shared by every chunk of `num_queries` queries
        (None: many); `query_tail`: constant last channels of every query (see DecoderAttention.memory)."""
        return self.decoding_cross_attention.memory(z, query_tail=query_tail, num_queries=num_queries)

    def forward(self, queries: torch.Tensor, z: Optional[torch.Tensor] = None, memory: Optional[DecoderMemory] = None,
                post: Optional[nn.Linear] = None) -> torch.Tensor:
        """queries (B, Q, query_dim) against latents z (B, L, D) (or their memory) -> (B, Q, out_channels).

        `post` is a further linear layer applied to the output (an output adapter's projection).
        """
        memory = memory if memory is not None else self.memory(z, queries.shape[1])
        head = None
        if hasattr(self, "final_layer"):
            weight, bias = self.final_layer.weight, self.final_layer.bias
            if post is not None:
                weight, bias = post.weight @ weight, post.weight @ bias + post.bias
            head = (weight, bias)
        return self.decoding_cross_attention.decode(queries, memory, head)

    def decode_in_chunks(self, z: torch.Tensor, num_queries: int, make_queries: Callable[[int, int], torch.Tensor],
                         chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, outputs) for queries [start, start+chunk) built by make_queries(start, stop)."""
        memory = self.memory(z, num_queries)
        starts = range(0, num_queries, chunk_size)
        outputs = run_chunks(lambda start: self(make_queries(start, min(start + chunk_size, num_queries)),
                                                memory=memory), starts, z.device)
        yield from zip(starts, outputs)


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
    """pixels (B, 3, H, W) -> tokens (B, N, C) with positions, for the three ImageNet checkpoints."""

    def __init__(self, spec: PerceiverSpec, numerics: Numerics):
        super().__init__()
        self.kind = spec.kind
        if self.kind == "vision-learned":
            self.convnet_1x1 = nn.Conv2d(3, 256, kernel_size=1)
            self.position_embeddings = LearnedPositions(spec.image_size ** 2, 256)
            self.positions_projection = Linear(256, 256)
            self.max_resolution = None
        elif self.kind == "vision-conv":
            self.convnet = ConvDownsample(64, numerics)
            self.max_resolution = (56, 56)
        else:
            self.max_resolution = (224, 224)

    def positions(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """vision-learned's projected position embeddings (N, 256), the same for every image: compute them
        once for a batch and pass them to forward. None for the other kinds (their positions are cheap)."""
        if self.kind != "vision-learned":
            return None
        return self.positions_projection(self.position_embeddings.position_embeddings.to(dtype))

    def forward(self, pixels: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.kind == "vision-learned":
            x = self.convnet_1x1(pixels)
        elif self.kind == "vision-conv":
            x = self.convnet(pixels)
        else:
            x = pixels
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.kind == "vision-learned":
            pos = self.positions(x.dtype) if positions is None else positions
        else:
            pos = fourier_features(grid_positions((h, w), device=x.device), 64, self.max_resolution).to(x.dtype)
        return torch.cat([tokens, pos.expand(b, -1, -1)], dim=-1)


def _vision_input_channels(spec: PerceiverSpec) -> int:
    if spec.kind == "vision-learned":
        return 256 + 256
    if spec.kind == "vision-conv":
        return 64 + fourier_size(2, 64)
    return 3 + fourier_size(2, 64)


class ClassificationDecoder(nn.Module):
    """One learned query -> class logits (key prefix `decoder.decoder`)."""

    def __init__(self, spec: PerceiverSpec, gelu: str, query_residual: bool):
        super().__init__()
        self.decoder = QueryDecoder(spec.d_latents, spec.d_latents, spec.num_labels, query_residual=query_residual,
                                    gelu_approximate=gelu, cross_shape=spec.cross_attention_shape_for_attention,
                                    learned_queries=(1, spec.d_latents))


class ImageClassifier(nn.Module):
    """deepmind/vision-perceiver-{learned,fourier,conv}: pixels (B, 3, 224, 224) normalised -> logits (B, labels)."""

    def __init__(self, spec: PerceiverSpec, numerics: Numerics):
        super().__init__()
        self.spec = spec
        gelu = _gelu(spec, numerics)
        residual = numerics.learned_decoder_query_residual if spec.kind == "vision-learned" else True
        self.perceiver = Trunk(
            ImagePreprocessor(spec, numerics), LatentEmbeddings(spec.num_latents, spec.d_latents),
            Encoder(spec, kv_dim=_vision_input_channels(spec), gelu_approximate=gelu),
            ClassificationDecoder(spec, gelu, residual),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) -> logits (B, num_labels).

        Images are independent: on CPU they go through the whole network a few at a time (layers.in_passes),
        so memory does not grow with the batch.
        """
        positions = self.perceiver.input_preprocessor.positions(pixel_values.dtype)  # once a call
        return in_passes(lambda part: self._logits(part, positions), self.spec.num_latents, pixel_values)

    def _logits(self, pixel_values: torch.Tensor, positions: Optional[torch.Tensor]) -> torch.Tensor:
        trunk = self.perceiver
        latents = trunk.embeddings.latents.to(pixel_values.dtype)[None]
        # An image's input tokens are the largest tensors (50,176 x 261 for vision-fourier): cross-attend one
        # image at a time, then run the latent stack on the images together.
        z = torch.cat([trunk.encoder.cross_attention(latents, kv=trunk.input_preprocessor(image[None], positions))
                       for image in pixel_values])
        z = trunk.encoder.process(z)
        decoder = self.perceiver.decoder.decoder
        query = decoder.output_position_encodings.position_embeddings.to(z.dtype).expand(z.shape[0], -1, -1)
        return decoder(query, z)[:, 0, :]


# ----------------------------------------------------------------------------------------------------------
# optical flow: 3x3 patches of two frames; the decoder's queries are the encoder's inputs.

class FlowPreprocessor(nn.Module):
    def __init__(self, spec: PerceiverSpec):
        super().__init__()
        self.train_size = tuple(spec.train_size)
        self.conv_after_patches = Linear(54, 64)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, 2, 27, H, W) -> tokens (B, H*W, 64 + Fourier channels)."""
        b, t, c, h, w = patches.shape
        x = patches.permute(0, 3, 4, 1, 2).reshape(b, h * w, t * c)
        pos = fourier_features(grid_positions((h, w), device=x.device), 64, self.train_size).to(x.dtype)
        return torch.cat([self.conv_after_patches(x), pos.expand(b, -1, -1)], dim=-1)


class FlowDecoder(nn.Module):
    def __init__(self, spec: PerceiverSpec, gelu: str):
        super().__init__()
        self.decoder = QueryDecoder(64 + fourier_size(2, 64), spec.d_latents, 2, query_residual=False,
                                    gelu_approximate=gelu, cross_shape=spec.cross_attention_shape_for_attention)


class OpticalFlowModel(nn.Module):
    """deepmind/optical-flow-perceiver: one window of two frames' patches -> flow (unscaled, as transformers)."""

    rescale_factor = 100.0

    def __init__(self, spec: PerceiverSpec, numerics: Numerics):
        super().__init__()
        self.spec = spec
        gelu = _gelu(spec, numerics)
        self.perceiver = Trunk(FlowPreprocessor(spec), LatentEmbeddings(spec.num_latents, spec.d_latents),
                               Encoder(spec, kv_dim=64 + fourier_size(2, 64), gelu_approximate=gelu),
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


# ----------------------------------------------------------------------------------------------------------
# multimodal autoencoding: audio patches + video patches + an always-masked label.

MODALITIES = ("audio", "image", "label")  # sorted: the order of tokens and of queries


class MultimodalPreprocessor(nn.Module):
    def __init__(self, spec: PerceiverSpec):
        super().__init__()
        self.spec = spec
        self.audio_channels = spec.samples_per_patch + fourier_size(1, 192)
        self.image_channels = 4 * 4 * 3 + fourier_size(3, 32)
        self.label_channels = spec.num_labels
        self.num_channels = max(self.audio_channels, self.image_channels, self.label_channels) + 4
        c = self.num_channels
        self.padding = NamedParameters({"audio": (1, c - self.audio_channels), "image": (1, c - self.image_channels),
                                        "label": (1, c - self.label_channels)})
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
        gelu = _gelu(spec, numerics)
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


_MODEL_CLASSES = {
    "language": MaskedLanguageModel,
    "vision-learned": ImageClassifier,
    "vision-fourier": ImageClassifier,
    "vision-conv": ImageClassifier,
    "flow": OpticalFlowModel,
    "multimodal": MultimodalAutoencoder,
}


def build_model(spec: PerceiverSpec, numerics: str | Numerics = "deepmind") -> nn.Module:
    """An untrained model of the spec's class (perceiver_cli.load.load_model loads weights)."""
    if isinstance(numerics, str):
        numerics = NUMERICS[numerics]
    onednn_linear_available()  # the engine decided now: a bad PERCEIVER_CLI_CPU_MATMUL stops before any input
    return _MODEL_CLASSES[spec.kind](spec, numerics)
