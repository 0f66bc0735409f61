"""Multiply-add counts (2 FLOPs each) of Perceiver IO stages, computed from the layer sizes of a config.

Only matrix products are counted (linear layers, attention scores and weighted sums, convolutions);
norms, softmax, GELU and Fourier features are left out, as a matmul peak is what they are compared with.
Two counts per layer:

- `reference`: the network as written (transformers computes exactly this): every projection applied.
- `ours`: what perceiver_cli.core.layers computes, following its exact-algebra folds (a single-head
  cross-attention folds narrow projections into keys, values or queries, and narrow output heads are
  composed with the MLP's last projection). Each rule below names the branch of layers.py it mirrors.

Sizes are read from a model built on the meta device from the config (no memory, no compute), so the
counts follow the config, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from perceiver_cli.core import build_model, spec_from_config
from perceiver_cli.core.decoding import decoder_folds
from perceiver_cli.core.layers import encoder_folds, stack_rows
from perceiver_cli.choices import DEFAULT_CHUNK_SIZE
from perceiver_cli.kinds import fourier_size
from perceiver_cli.core.text import MAX_BATCH_ROWS, MAX_BATCH_TOKENS


@dataclass(frozen=True)
class LayerDims:
    """Sizes of one attention block (AttentionLayer), read from its weights."""

    q_dim: int
    kv_dim: int
    qk: int
    v: int
    out: int
    hidden: int
    heads: int
    cross: bool


def layer_dims(layer: nn.Module) -> LayerDims:
    """The sizes of a perceiver_cli AttentionLayer (or anything with the same state_dict layout)."""
    p = layer.attention.self
    return LayerDims(q_dim=p.query.in_features, kv_dim=p.key.in_features, qk=p.query.out_features,
                     v=p.value.out_features, out=layer.attention.output.dense.out_features,
                     hidden=layer.mlp.dense1.out_features, heads=int(layer.num_heads), cross=bool(layer.cross))


def meta_model(config: dict, numerics: str = "transformers") -> nn.Module:
    """Our model of a config on the meta device: shapes only."""
    with torch.device("meta"):
        return build_model(spec_from_config(config), numerics)


def _mlp(d: LayerDims, nq: int) -> int:
    return 4 * nq * d.out * d.hidden


def reference_layer(d: LayerDims, nq: int, nk: int) -> int:
    """One block as written: q/k/v projections, scores, weighted sum, output projection, MLP."""
    return (2 * nq * d.q_dim * d.qk + 2 * nk * d.kv_dim * (d.qk + d.v) + 2 * nq * nk * (d.qk + d.v)
            + 2 * nq * d.v * d.out + _mlp(d, nq))


def ours_encoder_layer(d: LayerDims, nq: int, nk: int) -> int:
    """One encoder block as layers.AttentionLayer.attend computes it without a memory."""
    folds_keys, folds_values = encoder_folds(d.heads, d.kv_dim, d.qk, d.v)
    if d.cross and folds_keys:
        # key projection folded into the queries; scores against the normed inputs themselves
        flops = 2 * nq * d.q_dim * d.qk + 2 * nq * d.qk * d.kv_dim + 2 * nq * nk * d.kv_dim
        if folds_values:  # value and output projections composed and applied after attention
            flops += 2 * nq * nk * d.kv_dim + 2 * d.out * d.v * d.kv_dim + 2 * nq * d.kv_dim * d.out
        else:
            flops += 2 * nk * d.kv_dim * d.v + 2 * nq * nk * d.v + 2 * nq * d.v * d.out
        return flops + _mlp(d, nq)
    return reference_layer(d, nq, nk)


def ours_decoder_layer(d: LayerDims, nq: int, nk: int, query_tail: Optional[int] = None) -> int:
    """A decoder's cross-attention as AttentionLayer.memory + attend compute it (memory once for nq queries).

    query_tail: channels of constant padding folded into the keys (multimodal decoding)."""
    fold_q, fold_o = decoder_folds(d.heads, nk, d.q_dim, d.qk, d.v, d.out, nq, query_tail is not None)
    q_width = d.q_dim if query_tail is None else d.q_dim - query_tail + 2
    memory = 2 * nk * d.kv_dim * (d.qk + d.v)
    if fold_q:
        memory += 2 * nk * d.qk * q_width + 2 * nk * d.qk  # keys through the query weights; per-key offset
        if query_tail is not None:
            memory += 2 * 2 * d.qk * query_tail
    if fold_o:
        memory += 2 * nk * d.v * d.out
    flops = memory
    flops += 0 if fold_q else 2 * nq * d.q_dim * d.qk
    flops += 2 * nq * nk * (q_width if fold_q else d.qk)
    flops += 2 * nq * nk * (d.out if fold_o else d.v)
    flops += 0 if fold_o else 2 * nq * d.v * d.out
    flops += 2 * nq * d.out * d.hidden  # MLP's first projection; the second is counted with the head
    return flops


def ours_decoder_head(d: LayerDims, nq: int, heads: list[int], calls: int = 1) -> int:
    """The MLP's second projection and the output heads (final layer, then e.g. a postprocessor's linear),
    as QueryDecoder.forward composes them; `heads` lists output widths in order ([] for none)."""
    if not heads:
        return 2 * nq * d.hidden * d.out
    width, compose = heads[0], 0
    for extra in heads[1:]:  # post.weight @ final.weight, once per call
        compose += 2 * extra * width * d.out
        width = extra
    if width >= d.out:
        return compose * calls + 2 * nq * d.hidden * d.out + 2 * nq * d.out * width
    # narrow output: (W2 W) composed once per call, then two thin products
    return (compose + 2 * width * d.out * d.hidden) * calls + 2 * nq * d.out * width + 2 * nq * d.hidden * width


def reference_head(d: LayerDims, nq: int, heads: list[int]) -> int:
    """The output heads after a block (its MLP is counted by reference_layer), one after the other."""
    flops, width = 0, d.out
    for out in heads:
        flops += 2 * nq * width * out
        width = out
    return flops


@dataclass
class StageFlops:
    """FLOPs of one stage of a unit of work: what our core computes, and the network as written."""

    ours: int = 0
    reference: int = 0

    def add(self, ours: int, reference: int) -> None:
        """Accumulate both counts."""
        self.ours += ours
        self.reference += reference


def _encoder(model: nn.Module) -> tuple[LayerDims, list[LayerDims], int]:
    enc = model.perceiver.encoder
    return layer_dims(enc.cross_attention), [layer_dims(x) for x in enc.self_attends], int(enc.num_blocks)


def encoder_stages(model: nn.Module, n_inputs: int, n_inputs_reference: Optional[int] = None,
                   times: int = 1, times_reference: Optional[int] = None) -> dict[str, StageFlops]:
    """Encoder cross-attention and latent self-attention stack, run `times` times over n_inputs tokens."""
    cross, selfs, blocks = _encoder(model)
    nl = model.perceiver.embeddings.latents.shape[0]
    n_ref = n_inputs if n_inputs_reference is None else n_inputs_reference
    t_ref = times if times_reference is None else times_reference
    stack_one = blocks * sum(reference_layer(d, nl, nl) for d in selfs)
    return {
        "encoder cross-attention": StageFlops(times * ours_encoder_layer(cross, nl, n_inputs),
                                              t_ref * reference_layer(cross, nl, n_ref)),
        "latent self-attention": StageFlops(times * stack_one, t_ref * stack_one),
    }


def language_stages(model: nn.Module, text_bytes: list[int], masked: list[int],
                    reference_length: int) -> dict[str, StageFlops]:
    """fill-mask over texts: ours encodes each text's real bytes and decodes its masked positions; the
    reference encodes `reference_length` tokens and decodes every position of the table."""
    stages = {"encoder cross-attention": StageFlops(), "latent self-attention": StageFlops(), "decode": StageFlops()}
    dec = layer_dims(model.perceiver.decoder.decoding_cross_attention)
    positions, d_model = model.perceiver.decoder.output_position_encodings.position_embeddings.shape
    vocab = model.embedding_decoder.bias.shape[0]
    nl = model.perceiver.embeddings.latents.shape[0]
    for n, m in zip(text_bytes, masked):
        for name, s in encoder_stages(model, n, reference_length).items():
            stages[name].add(s.ours, s.reference)
        stages["decode"].add(ours_decoder_layer(dec, m, nl) + ours_decoder_head(dec, m, []) + 2 * m * d_model * vocab,
                             reference_layer(dec, positions, nl) + reference_head(dec, positions, [])
                             + 2 * positions * d_model * vocab)
    return stages


def padded_texts(items: list[tuple[int, int]], num_latents: int,
                 device: torch.device) -> tuple[list[int], list[int]]:
    """(encoded length, decoded positions) of each (text bytes, masked bytes) item as core.text.byte_log_probs
    runs them: longest first, in batches of at most stack_rows(MAX_BATCH_ROWS) rows and MAX_BATCH_TOKENS
    tokens, each row padded to its batch's longest text and most masked positions."""
    rows_max = stack_rows(MAX_BATCH_ROWS, num_latents, device)
    lengths: list[int] = []
    masked: list[int] = []
    batch: list[tuple[int, int]] = []

    def flush() -> None:
        lengths.extend(batch[0][0] for _ in batch)
        masked.extend(max(m for _, m in batch) for _ in batch)

    for item in sorted(items, key=lambda x: -x[0]):
        if batch and (len(batch) >= rows_max or (len(batch) + 1) * batch[0][0] > MAX_BATCH_TOKENS):
            flush()
            batch = []
        batch.append(item)
    if batch:
        flush()
    return lengths, masked


def vision_tokens(model: nn.Module) -> int:
    """Input tokens of a 224x224 image for a vision checkpoint under the model's numerics."""
    pre = model.perceiver.input_preprocessor
    if pre.stem == "conv":
        return 56 * 56 if pre.convnet.numerics.tf_same_conv else 55 * 55
    return 224 * 224


def _preprocessor_flops(model: nn.Module) -> tuple[int, int]:
    """(FLOPs per image, FLOPs per forward call whatever its batch) of the input adapter."""
    pre = model.perceiver.input_preprocessor
    if pre.stem == "learned":
        n = 224 * 224
        return 2 * n * 3 * 256, 2 * n * 256 * 256  # the position projection: once a call
    if pre.stem == "conv":
        conv = pre.convnet.conv
        return 2 * 112 * 112 * conv.out_channels * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1], 0
    return 0, 0


def vision_stages(model: nn.Module, images: int, batch: int = 1, rows: Optional[int] = None) -> dict[str, StageFlops]:
    """classify `images` images, `batch` a forward call that goes through in passes of `rows` images (default:
    the whole batch; see core.layers.stack_rows); the reference runs one image a call."""
    stages = encoder_stages(model, vision_tokens(model), times=images)
    dec = layer_dims(model.perceiver.decoder.decoder.decoding_cross_attention)
    labels = model.perceiver.decoder.decoder.final_layer.out_features
    nl = model.perceiver.embeddings.latents.shape[0]
    rows = batch if rows is None else rows
    sizes = [min(batch, images - start) for start in range(0, images, batch)]
    passes = sum(-(-size // rows) for size in sizes)
    # our decoder's memory is per image whatever the batch; its head is composed once a pass
    ours_dec = images * ours_decoder_layer(dec, 1, nl) + ours_decoder_head(dec, images, [labels], calls=passes)
    ref_dec = images * (reference_layer(dec, 1, nl) + reference_head(dec, 1, [labels]))
    per_image, per_call = _preprocessor_flops(model)
    stages["decode"] = StageFlops(ours_dec, ref_dec)
    stages["input adapter"] = StageFlops(images * per_image + len(sizes) * per_call,
                                         images * (per_image + per_call))
    return stages


def flow_stages(model: nn.Module, windows: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, StageFlops]:
    """One or more flow windows of the model's train_size, decoded chunk_size queries at a time."""
    h, w = model.spec.train_size
    n = h * w
    stages = encoder_stages(model, n, times=windows)
    dec = layer_dims(model.perceiver.decoder.decoder.decoding_cross_attention)
    nl = model.perceiver.embeddings.latents.shape[0]
    patches = model.perceiver.input_preprocessor.conv_after_patches
    calls = -(-n // chunk_size)
    stages["decode"] = StageFlops(windows * (ours_decoder_layer(dec, n, nl) + ours_decoder_head(dec, n, [2], calls)),
                                  windows * (reference_layer(dec, n, nl) + reference_head(dec, n, [2])))
    pre = windows * 2 * n * patches.in_features * patches.out_features
    stages["input adapter"] = StageFlops(pre, pre)
    return stages


def multimodal_sizes(model: nn.Module) -> dict[str, int]:
    """Encoder input tokens and decoder queries per modality for one clip."""
    s = model.spec
    audio = s.num_frames * s.audio_samples_per_frame // s.samples_per_patch
    t, h, w = s.output_shape[1:4]
    return {"inputs": audio + t * (h // 4) * (w // 4) + 1, "audio": audio, "image": t * h * w, "label": 1}


def multimodal_stages(model: nn.Module, reference_chunks: int, reference_chunks_of: int,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, StageFlops]:
    """One clip: ours encodes once and decodes every output in chunks of chunk_size queries; the reference
    loop (transformers' example) re-encodes for each of `reference_chunks_of` chunks and decodes that
    chunk's queries of all modalities together; `reference_chunks` of those chunks are counted."""
    sizes = multimodal_sizes(model)
    stages = encoder_stages(model, sizes["inputs"], times=1, times_reference=reference_chunks)
    dec_mod = model.perceiver.decoder
    dec = layer_dims(dec_mod.decoder.decoding_cross_attention)
    nl = model.perceiver.embeddings.latents.shape[0]
    out_channels = dec_mod.decoder.final_layer.out_features
    widths = {"audio": fourier_size(1, 192), "image": fourier_size(3, 32), "label": dec_mod.label_query_channels}
    ours = reference_heads = reference_queries = 0
    for name, width in widths.items():
        nq, head = sizes[name], getattr(model.perceiver.output_postprocessor.modalities, name).classifier.out_features
        calls = -(-nq // chunk_size)
        ours += (ours_decoder_layer(dec, nq, nl, query_tail=dec.q_dim - width)
                 + ours_decoder_head(dec, nq, [out_channels, head], calls))
        per_chunk = 1 if name == "label" else nq // reference_chunks_of
        reference_queries += per_chunk
        reference_heads += 2 * per_chunk * out_channels * head
    per_chunk_flops = (reference_layer(dec, reference_queries, nl)
                       + reference_head(dec, reference_queries, [out_channels]) + reference_heads)
    stages["decode"] = StageFlops(ours, reference_chunks * per_chunk_flops)
    return stages


def total(stages: dict[str, StageFlops]) -> StageFlops:
    """Sum of the stages."""
    out = StageFlops()
    for s in stages.values():
        out.add(s.ours, s.reference)
    return out
