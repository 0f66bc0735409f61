"""What every Perceiver IO model shares: the `perceiver.*` trunk (input adapter, latents, encoder, decoder,
output adapter), the query decoder that cross-attends chunks of output queries to the latents, and the
sharing of those chunks between single-threaded workers on a CPU.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from perceiver_cli.choices import DEFAULT_CHUNK_SIZE
from perceiver_cli.core.decoding import DecoderAttention, DecoderMemory
from perceiver_cli.core.layers import Encoder, LatentEmbeddings, Linear

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


def latent_features(z: Optional[torch.Tensor], kind: Optional[str]) -> Optional[np.ndarray]:
    """latents (B, L, D) -> themselves ("latents") or their mean over L, (B, D) ("pooled"), as float32 numpy."""
    if z is None or kind is None:
        return None
    chosen = z.float().mean(dim=1) if kind == "pooled" else z.float()
    return chosen.cpu().numpy()
