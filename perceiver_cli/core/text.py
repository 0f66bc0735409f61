"""Byte-level masked-span filling with the language checkpoint: tokens, windows, batching, exact top-k.

Tokens are DeepMind's own: each UTF-8 byte b is id b + 6, PAD is 0 and MASK is 3, with no [CLS]/[SEP]
around the text. Every masked byte is one MASK id. The encoder sees only the real bytes of each window
(rows of a batch are padded and masked), and the decoder computes only the masked positions.

A filling's probability is the product, over its masked bytes, of the softmax probability (over all 262
ids) that one forward pass gives that byte at that position. The k best fillings under that product are
found exactly (best-first search, see best_fillings); fillings whose spans are not each valid UTF-8 are
skipped, never repaired, so the top-1 is the per-byte argmax whenever that argmax is valid UTF-8.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, Generator, Optional, Sequence, Union

import numpy as np
import torch

from perceiver_cli.core.layers import stack_rows

CPU = torch.device("cpu")

PAD_ID = 0
MASK_ID = 3
BYTE_OFFSET = 6  # id of byte b is b + BYTE_OFFSET
NUM_BYTES = 256
# Batches of encoder windows: at most this many rows, and at most this many (padded) positions in all.
MAX_BATCH_ROWS = 32
MAX_BATCH_TOKENS = 16384


class SpanError(ValueError):
    """A masked span that the model's positions cannot hold."""


# ----------------------------------------------------------------------------------------------------------
# UTF-8 as a finite automaton (Unicode Table 3-7: no overlong forms, surrogates or code points past U+10FFFF).
# States: 0 between characters (accepting); 1, 2, 3 continuation bytes still expected; 4 after E0, 5 after
# ED, 6 after F0, 7 after F4 (their second byte has a narrower range). DEAD marks an invalid byte.

_DEAD = 8


def _utf8_table() -> np.ndarray:
    t = np.full((8, NUM_BYTES), _DEAD, dtype=np.int64)
    t[0, 0x00:0x80] = 0
    t[0, 0xC2:0xE0] = 1
    t[0, 0xE0] = 4
    t[0, 0xE1:0xED] = 2
    t[0, 0xED] = 5
    t[0, 0xEE:0xF0] = 2
    t[0, 0xF0] = 6
    t[0, 0xF1:0xF4] = 3
    t[0, 0xF4] = 7
    t[1, 0x80:0xC0] = 0
    t[2, 0x80:0xC0] = 1
    t[3, 0x80:0xC0] = 2
    t[4, 0xA0:0xC0] = 1
    t[5, 0x80:0xA0] = 1
    t[6, 0x90:0xC0] = 2
    t[7, 0x80:0x90] = 2
    return t


UTF8_TRANSITIONS = _utf8_table()
# One accepting state that every byte keeps: no constraint at all (used to test the search itself).
ANY_BYTES_TRANSITIONS = np.zeros((1, NUM_BYTES), dtype=np.int64)


@dataclass(frozen=True)
class Filling:
    """One filling of every mask of a text: the bytes of each span, and its log-probability (natural log)."""

    spans: tuple[bytes, ...]
    log_prob: float


def _best_completions(log_probs: np.ndarray, span_lengths: Sequence[int],
                      transitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact best-completion scores by dynamic programming, from the last position back.

    Returns (H, C): H (P+1, S+1), H[i, s] the best log-probability of bytes i..P-1 entered in state s (every
    span ending in state 0); C (P, S, 256), C[i, s, b] = log_probs[i, b] + H[i+1, next state].
    """
    n_pos = log_probs.shape[0]
    n_states = transitions.shape[0]
    dead = np.where(transitions == _DEAD, n_states, transitions)  # column S of H is the dead state (-inf)
    span_starts = set(np.cumsum([0, *span_lengths[:-1]]).tolist())
    best = np.full((n_pos + 1, n_states + 1), -np.inf)
    best[n_pos, 0] = 0.0
    completions = np.empty((n_pos, n_states, NUM_BYTES))
    for i in range(n_pos - 1, -1, -1):
        completions[i] = log_probs[i][None, :] + best[i + 1][dead]
        best[i, :n_states] = completions[i].max(axis=1)
        if i in span_starts:  # a span starts here, so the previous span must have ended a character
            best[i, 1:n_states] = -np.inf
    return best, completions


def _check(log_probs: np.ndarray, span_lengths: Sequence[int]) -> np.ndarray:
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != NUM_BYTES:
        raise ValueError(f"log_probs must be (P, {NUM_BYTES}), got {lp.shape}")
    if sum(span_lengths) != lp.shape[0] or any(n < 1 for n in span_lengths):
        raise ValueError(f"span lengths {list(span_lengths)} do not cover {lp.shape[0]} positions")
    return lp


def best_log_prob(log_probs: np.ndarray, span_lengths: Sequence[int], utf8: bool = True) -> float:
    """Log-probability of the single best filling (P, 256) -> float; -inf when no filling is valid."""
    lp = _check(log_probs, span_lengths)
    best, _ = _best_completions(lp, span_lengths, UTF8_TRANSITIONS if utf8 else ANY_BYTES_TRANSITIONS)
    return float(best[0, 0])


def best_fillings(log_probs: np.ndarray, span_lengths: Sequence[int], k: int, utf8: bool = True) -> list[Filling]:
    """The k most probable fillings, best first, under independent per-position byte distributions.

    log_probs (P, 256): log-probability of each byte at each masked position, the spans' positions one after
    another (span_lengths sum to P). With utf8, only fillings whose every span is valid UTF-8 count.

    Exact: a best-first search over byte prefixes whose priority is the prefix's log-probability plus the
    exact best completion (dynamic programming), with each node's children generated lazily in sorted order
    (first child, then next sibling). So every popped complete filling is the next best, and the search
    takes O(k * P) pops whatever the size of the space (256^P).
    """
    lp = _check(log_probs, span_lengths)
    if k < 1:
        return []
    transitions = UTF8_TRANSITIONS if utf8 else ANY_BYTES_TRANSITIONS
    best, completions = _best_completions(lp, span_lengths, transitions)
    n_pos = lp.shape[0]
    if not math.isfinite(best[0, 0]):
        return []
    orders: dict[tuple[int, int], np.ndarray] = {}

    def children(depth: int, state: int) -> np.ndarray:
        """Bytes allowed after a prefix of this depth in this state, best completion first (ties: lower byte)."""
        key = (depth, state)
        if key not in orders:
            scores = completions[depth, state]
            allowed = np.flatnonzero(np.isfinite(scores))
            orders[key] = allowed[np.argsort(-scores[allowed], kind="stable")]
        return orders[key]

    # Heap entries: (-priority, tie counter, depth, state, log-prob so far, prefix, sibling info).
    # A prefix is a linked list (parent prefix, byte); sibling info is (parent prefix, parent log-prob,
    # parent state, rank among the parent's children), None at the root.
    counter = 0
    heap = [(-best[0, 0], counter, 0, 0, 0.0, None, None)]
    found: list[Filling] = []
    while heap and len(found) < k:
        _, _, depth, state, logp, prefix, sibling = heapq.heappop(heap)
        if sibling is not None:
            parent_prefix, parent_logp, parent_state, rank = sibling
            order = children(depth - 1, parent_state)
            if rank + 1 < len(order):
                byte = int(order[rank + 1])
                counter += 1
                heapq.heappush(heap, (-(parent_logp + completions[depth - 1, parent_state, byte]), counter, depth,
                                      int(transitions[parent_state, byte]), parent_logp + lp[depth - 1, byte],
                                      (parent_prefix, byte), (parent_prefix, parent_logp, parent_state, rank + 1)))
        if depth == n_pos:
            found.append(Filling(_split(_unlink(prefix, n_pos), span_lengths), float(logp)))
            continue
        order = children(depth, state)
        if len(order):
            byte = int(order[0])
            counter += 1
            heapq.heappush(heap, (-(logp + completions[depth, state, byte]), counter, depth + 1,
                                  int(transitions[state, byte]), logp + lp[depth, byte], (prefix, byte),
                                  (prefix, logp, state, 0)))
    return found


def _unlink(prefix, length: int) -> bytes:
    out = bytearray(length)
    for i in range(length - 1, -1, -1):
        prefix, out[i] = prefix
    return bytes(out)


def _split(data: bytes, span_lengths: Sequence[int]) -> tuple[bytes, ...]:
    spans, start = [], 0
    for n in span_lengths:
        spans.append(data[start:start + n])
        start += n
    return tuple(spans)


# ----------------------------------------------------------------------------------------------------------
# Token ids and windows.

def masked_ids(pieces: Sequence[bytes], lengths: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Ids (N,) of literal byte pieces with MASK runs of the given lengths between them, and each span's
    (start, length)."""
    parts, spans, cursor = [], [], 0
    for i, piece in enumerate(pieces):
        parts.append(np.frombuffer(piece, dtype=np.uint8).astype(np.int64) + BYTE_OFFSET)
        cursor += len(piece)
        if i < len(lengths):
            parts.append(np.full(lengths[i], MASK_ID, dtype=np.int64))
            spans.append((cursor, lengths[i]))
            cursor += lengths[i]
    return np.concatenate(parts), spans


def _is_continuation(token: int) -> bool:
    return 0x80 + BYTE_OFFSET <= token < 0xC0 + BYTE_OFFSET


@dataclass(frozen=True)
class Window:
    """Bytes [start, stop) of a masked text seen in one forward pass, to fill the masks listed (by index)."""

    start: int
    stop: int
    masks: tuple[int, ...]


def plan_windows(ids: np.ndarray, spans: Sequence[tuple[int, int]], window: int) -> list[Window]:
    """Windows of at most `window` positions covering every span, each span wholly inside exactly one window.

    A text that fits is one window. Otherwise masks are grouped left to right while the group's bytes (first
    span start to last span end) fit, and each group's window is centred on it, moved inside the text, and
    trimmed so it neither starts nor ends inside a UTF-8 character of the context.
    """
    total = len(ids)
    if total <= window:
        return [Window(0, total, tuple(range(len(spans))))]
    for i, (start, length) in enumerate(spans):
        if length > window:
            raise SpanError(f"mask {i + 1} spans {length} bytes, more than the model's {window} positions")
    groups: list[list[int]] = []
    for i, (start, length) in enumerate(spans):
        if groups and start + length - spans[groups[-1][0]][0] <= window:
            groups[-1].append(i)
        else:
            groups.append([i])
    windows = []
    for group in groups:
        region_start = spans[group[0]][0]
        region_stop = spans[group[-1]][0] + spans[group[-1]][1]
        start = region_start - (window - (region_stop - region_start)) // 2
        start = min(max(start, 0), total - window)
        stop = start + window
        while start < region_start and _is_continuation(int(ids[start])):
            start += 1
        while stop > region_stop and stop < total and _is_continuation(int(ids[stop])):
            stop -= 1
        windows.append(Window(start, stop, tuple(group)))
    return windows


def _window_positions(window: Window, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Positions (P,) inside the window of the masked bytes of its masks."""
    return np.concatenate([np.arange(spans[i][0], spans[i][0] + spans[i][1]) - window.start for i in window.masks])


# ----------------------------------------------------------------------------------------------------------
# Running the model.

@torch.inference_mode()
def byte_log_probs(model: torch.nn.Module, jobs: Sequence[tuple[np.ndarray, np.ndarray]],
                   max_rows: int = MAX_BATCH_ROWS, max_tokens: int = MAX_BATCH_TOKENS, *,
                   device: torch.device = CPU) -> list[np.ndarray]:
    """For each job (ids (N,), positions (P,)): log-probabilities (P, 256) of each byte at those positions.

    Jobs are sorted by length and batched (padded with PAD, padding masked out of the encoder's attention);
    one encoder pass per job, and the decoder computes only the requested positions. `model` is on `device`.
    """
    # on CPU, a batch is as many rows as the latent stack takes in one pass (layers.stack_rows): larger
    # batches are no faster there, and their latents and decoder keys would only add memory
    max_rows = stack_rows(max_rows, model.spec.num_latents, device)
    order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][0]))
    results: list[Optional[np.ndarray]] = [None] * len(jobs)
    batch: list[int] = []

    def run(rows: list[int]) -> None:
        width = len(jobs[rows[0]][0])
        depth = max(len(jobs[j][1]) for j in rows)
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        positions = torch.zeros((len(rows), depth), dtype=torch.long)
        for r, j in enumerate(rows):
            tokens, where = jobs[j]
            ids[r, :len(tokens)] = torch.from_numpy(tokens)
            mask[r, :len(tokens)] = True
            positions[r, :len(where)] = torch.from_numpy(where)
        padded = not bool(mask.all())
        z = model.encode(ids.to(device), mask.to(device) if padded else None)
        logits = model.decode(z, positions.to(device))
        log_probs = torch.log_softmax(logits.float(), dim=-1)[..., BYTE_OFFSET:BYTE_OFFSET + NUM_BYTES]
        out = log_probs.double().cpu().numpy()
        for r, j in enumerate(rows):
            results[j] = out[r, :len(jobs[j][1])]

    for j in order:
        if batch and (len(batch) >= max_rows or (len(batch) + 1) * len(jobs[batch[0]][0]) > max_tokens):
            run(batch)
            batch = []
        batch.append(j)
    if batch:
        run(batch)
    return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------
# Filling texts: span lengths, windows, search.

@dataclass
class FillResult:
    """What fill_masks found for one text."""

    lengths: tuple[int, ...]                      # bytes per mask (given or chosen)
    chosen: tuple[bool, ...]                      # whether the tool chose each length (bare [MASK])
    length_scores: tuple[Optional[dict[int, float]], ...]  # per chosen mask: candidate length -> score
    fillings: list[Filling]                       # best first
    windows: list[Window]                         # byte ranges of the masked text that the model saw
    total_bytes: int                              # length of the masked text in bytes
    window_size: int                              # the model's positions

    @property
    def windowed(self) -> bool:
        """Whether the text was longer than the model's positions (so filled from windows)."""
        return self.total_bytes > self.window_size


def length_score(log_prob: float, total_bytes: int) -> float:
    """The length-fair score of a span-length choice: mean log-probability per masked byte of the best filling."""
    return log_prob / total_bytes


Request = list[tuple[int, ...]]


def _plan(pieces: Sequence[bytes], masks: Sequence[Optional[int]], top_k: int, max_span: int, window: int,
          utf8: bool) -> Generator[Request, list[np.ndarray], FillResult]:
    """One text's work: yields lists of length assignments to evaluate, receives their (P, 256) log-probs."""
    for i, n in enumerate(masks):
        if n is not None and n > window:
            raise SpanError(f"mask {i + 1} spans {n} bytes, more than the model's {window} positions")
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def need(assignments: Request):
        new = [a for a in dict.fromkeys(assignments) if a not in cache]
        if new:
            got = yield new
            cache.update(zip(new, got))

    def score(assignment: tuple[int, ...]) -> float:
        return length_score(best_log_prob(cache[assignment], assignment, utf8), sum(assignment))

    bare = [i for i, n in enumerate(masks) if n is None]
    length_scores: list[Optional[dict[int, float]]] = [None] * len(masks)
    if not bare:
        best = tuple(int(n) for n in masks)  # type: ignore[arg-type]
        yield from need([best])
    else:
        candidates = list(range(1, min(max_span, window) + 1))
        # First every bare mask at one common length; then, with several, each in turn over all lengths.
        common = [tuple(length if n is None else n for n in masks) for length in candidates]
        yield from need(common)
        scores = [score(a) for a in common]
        best = common[int(np.argmax(scores))]  # ties: the shortest
        if len(bare) == 1:
            length_scores[bare[0]] = dict(zip(candidates, scores))
        else:
            for i in bare:
                trials = [best[:i] + (length,) + best[i + 1:] for length in candidates]
                yield from need(trials)
                scores = [score(a) for a in trials]
                length_scores[i] = dict(zip(candidates, scores))
                if max(scores) > score(best):
                    best = trials[int(np.argmax(scores))]
    ids, spans = masked_ids(pieces, best)
    return FillResult(lengths=best, chosen=tuple(n is None for n in masks), length_scores=tuple(length_scores),
                      fillings=best_fillings(cache[best], best, top_k, utf8),
                      windows=plan_windows(ids, spans, window), total_bytes=len(ids), window_size=window)


def fill_masks(model: torch.nn.Module, texts: Sequence[tuple[Sequence[bytes], Sequence[Optional[int]]]],
               top_k: int, max_span: int, *, utf8: bool = True, max_rows: int = MAX_BATCH_ROWS,
               max_tokens: int = MAX_BATCH_TOKENS, on_done: Optional[Callable[[int], None]] = None,
               device: torch.device = CPU) -> list[Union[FillResult, SpanError]]:
    """Fill the masks of many texts (literal byte pieces, mask lengths or None) together, in batched passes.

    Each text's candidate span lengths and windows become encoder jobs; the jobs of all texts are run
    together, sorted by length (identical windows once). A text whose span cannot fit gets a SpanError.
    on_done(n) is called as n more texts finish.
    """
    window = model.spec.max_position_embeddings
    results: list[Union[FillResult, SpanError, None]] = [None] * len(texts)
    active: dict[int, tuple[Generator, Request]] = {}

    def advance(i: int, plan: Generator, sent: Optional[list[np.ndarray]]) -> None:
        try:
            active[i] = (plan, plan.send(sent))
        except StopIteration as stop:
            results[i] = stop.value
        except SpanError as exc:
            results[i] = exc
        if i not in active and on_done is not None:
            on_done(1)

    for i, (pieces, masks) in enumerate(texts):
        advance(i, _plan(pieces, masks, top_k, max_span, window, utf8), None)
    while active:
        keys: dict[tuple[bytes, bytes], int] = {}
        jobs: list[tuple[np.ndarray, np.ndarray]] = []
        layout: dict[int, list[list[int]]] = {}
        for i, (plan, request) in active.items():
            layout[i] = []
            for assignment in request:
                ids, spans = masked_ids(texts[i][0], assignment)
                job_keys = []
                for win in plan_windows(ids, spans, window):
                    tokens, where = ids[win.start:win.stop], _window_positions(win, spans)
                    key = (tokens.tobytes(), where.tobytes())
                    if key not in keys:
                        keys[key] = len(jobs)
                        jobs.append((tokens, where))
                    job_keys.append(keys[key])
                layout[i].append(job_keys)
        outputs = byte_log_probs(model, jobs, max_rows, max_tokens, device=device)
        waiting = dict(active)
        active.clear()
        for i, (plan, request) in waiting.items():
            advance(i, plan, [np.concatenate([outputs[j] for j in job_keys]) for job_keys in layout[i]])
    return results  # type: ignore[return-value]


@torch.inference_mode()
def text_features(model: torch.nn.Module, texts: Sequence[np.ndarray], kind: str,
                  device: torch.device = CPU) -> list[np.ndarray]:
    """Latent features (see trunk.latent_features) of each text's ids (N,), cut to the model's positions: one
    encoder pass per text, unpadded."""
    from perceiver_cli.core.trunk import latent_features

    limit = model.spec.max_position_embeddings
    return [latent_features(model.encode(torch.from_numpy(ids[:limit])[None].to(device)), kind)[0] for ids in texts]
