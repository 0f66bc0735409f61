"""Property tests of fill-mask's text side: the mask parser, the line reader, UTF-8 validity and the top-k search.

The default run is brief. For a longer search, set HYPOTHESIS_MAX_EXAMPLES:

    HYPOTHESIS_MAX_EXAMPLES=5000 python -m pytest tests/test_text_fuzz.py -q
"""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perceiver_cli.core.text import best_fillings
from perceiver_cli.io.text import MASK_TOKEN, BadLine, MaskSyntaxError, MaskedText, parse_masked_text, read_text_lines
from utf8_automaton import is_valid_utf8



def render_masked_text(pieces: list[str], masks: list) -> str:
    """The inverse of parse_masked_text: pieces joined by `[MASK]` or `[MASK:n]`."""
    out = [pieces[0]]
    for mask, piece in zip(masks, pieces[1:]):
        out.append(MASK_TOKEN if mask is None else f"[MASK:{mask}]")
        out.append(piece)
    return "".join(out)


MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "60"))
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Text that leans towards the parser's edge cases: brackets, the word MASK, colons, digits, multi-byte characters.
_ALPHABET = st.sampled_from(list("[]:MASK0123456789 ab\né€日\U0001F600\x00") + ["[MASK", "[MASK:", "MASK]"])
tricky_text = st.lists(_ALPHABET, max_size=30).map("".join)
literal_piece = tricky_text.filter(lambda s: "[MASK]" not in s and "[MASK:" not in s)
mask_length = st.one_of(st.none(), st.integers(min_value=1, max_value=10**9 - 1))


@FUZZ
@given(st.lists(st.tuples(literal_piece, mask_length), min_size=1, max_size=5), literal_piece)
def test_rendered_masks_parse_back_to_the_same_pieces_and_lengths(pairs, last):
    pieces = [piece for piece, _ in pairs] + [last]
    masks = [mask for _, mask in pairs]
    parsed = parse_masked_text(render_masked_text(pieces, masks))
    assert parsed.masks == tuple(masks)
    assert parsed.pieces == tuple(pieces)


@FUZZ
@given(tricky_text)
def test_the_parser_either_splits_a_text_or_says_why_not(text):
    try:
        parsed = parse_masked_text(text)
    except MaskSyntaxError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(parsed, MaskedText)
    assert len(parsed.pieces) == len(parsed.masks) + 1 >= 2
    assert all(n is None or n >= 1 for n in parsed.masks)
    assert all("[MASK]" not in p for p in parsed.pieces)
    # rendering gives back a text with the same structure, and the fill-in of every mask rebuilds the pieces
    assert parse_masked_text(render_masked_text(list(parsed.pieces), list(parsed.masks))).masks == parsed.masks
    fills = [f"<{i}>" for i in range(len(parsed.masks))]
    assert parsed.fill(fills).count("<") >= len(parsed.masks)


@FUZZ
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=6))
def test_the_line_reader_yields_every_line_decoded_or_reported(lines):
    data = b"".join(line + b"\n" for line in lines)
    got = list(read_text_lines(io.BytesIO(data)))
    assert [number for number, _ in got] == list(range(1, len(lines) + 1))
    for (number, text), raw in zip(got, lines):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            expected = raw.decode("utf-8")
        except UnicodeDecodeError:
            assert isinstance(text, BadLine) and "not valid UTF-8" in text.problem
        else:
            assert text == expected


@FUZZ
@given(st.binary(max_size=16))
def test_utf8_automaton_agrees_with_python_decode(data):
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert is_valid_utf8(data) == valid


@FUZZ
@given(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=3).filter(lambda s: sum(s) <= 4),
       st.lists(st.integers(min_value=0, max_value=255), min_size=2, max_size=6, unique=True),
       st.integers(min_value=1, max_value=30), st.integers(min_value=0, max_value=2**31 - 1))
def test_top_k_search_equals_enumeration(spans, alphabet, k, seed):
    alphabet = sorted(set(alphabet) | {0xC3, 0xA9})  # always some 2-byte characters in reach
    rng = np.random.default_rng(seed)
    n = sum(spans)
    lp = np.full((n, 256), -np.inf)
    lp[:, alphabet] = rng.normal(size=(n, len(alphabet)))
    scored = []
    for combo in itertools.product(alphabet, repeat=n):
        data, parts, start = bytes(combo), [], 0
        for length in spans:
            parts.append(data[start:start + length])
            start += length
        try:
            [part.decode("utf-8") for part in parts]
        except UnicodeDecodeError:
            continue
        scored.append(sum(lp[i, b] for i, b in enumerate(combo)))
    expected = sorted(scored, reverse=True)[:k]
    got = best_fillings(lp, spans, k)
    np.testing.assert_allclose([f.log_prob for f in got], expected, atol=1e-9)
    assert all(all(is_valid_utf8(span) for span in f.spans) for f in got)
