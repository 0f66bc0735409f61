"""`perceiver fill-mask` against transformers' PerceiverForMaskedLM on a tiny random checkpoint (64 positions).

The oracle is transformers run on the same bytes (UTF-8 + 6, MASK = 3, no [CLS]/[SEP]); the top-k search
is checked against brute-force enumeration with Python's own UTF-8 decoder as the validity rule.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import sys

import numpy as np
import pytest
import torch

from perceiver_cli.cli import main
from perceiver_cli.load import load_model
from perceiver_cli.core.text import (MASK_ID, best_fillings, best_log_prob, byte_log_probs, fill_masks,
                                     masked_ids, plan_windows)
from tiny_models import make_tiny_checkpoint
from utf8_automaton import is_valid_utf8

TOL = 1e-4
POSITIONS = 64  # the tiny checkpoint's max_position_embeddings


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fill_mask") / "language"
    hf = make_tiny_checkpoint("language", directory, seed=3)
    return directory, hf


@pytest.fixture(scope="module")
def ours(checkpoint):
    return load_model(str(checkpoint[0]), device="cpu", numerics="transformers")


def oracle_ids(text: str) -> list[int]:
    """Ids written independently of the code under test: bytes + 6, each [MASK:n] as n MASK ids."""
    first, *rest = text.split("[MASK:")
    out = [b + 6 for b in first.encode("utf-8")]
    for part in rest:
        n, literal = part.split("]", 1)
        out.extend([3] * int(n))
        out.extend(b + 6 for b in literal.encode("utf-8"))
    return out


@torch.no_grad()
def oracle_probs(hf, ids: list[int]) -> np.ndarray:
    """transformers' softmax over the 262 ids at every position of an unpadded input (N, 262)."""
    logits = hf(inputs=torch.tensor([ids])).logits[0, :len(ids)]
    return torch.softmax(logits.double(), dim=-1).numpy()


def run_cli(capsys, *args: str, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main(["fill-mask", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, checkpoint, *args: str, **kwargs):
    code, out, err = run_cli(capsys, *args, "--weights", str(checkpoint[0]), "--numerics", "transformers", "--json",
                             **kwargs)
    return code, [json.loads(line) for line in out.splitlines()], err


def masked_positions(ids: list[int]) -> list[int]:
    return [i for i, t in enumerate(ids) if t == 3]


# ----------------------------------------------------------------------------------------------------------
# The model side: distributions, padding, masked-only decoding.

def test_byte_distributions_equal_transformers(checkpoint, ours):
    text = "The cat [MASK:4] on the mat, [MASK:2]."
    ids = oracle_ids(text)
    where = masked_positions(ids)
    (ours_lp,) = byte_log_probs(ours, [(np.array(ids), np.array(where))])
    expected = oracle_probs(checkpoint[1], ids)[where][:, 6:]
    assert ours_lp.shape == (6, 256)
    np.testing.assert_allclose(np.exp(ours_lp), expected, atol=TOL)


def test_top1_is_the_argmax_byte_of_transformers_at_each_masked_position(checkpoint, ours):
    ids = oracle_ids("abc [MASK:5] def [MASK:3] ghi")
    where = masked_positions(ids)
    (lp,) = byte_log_probs(ours, [(np.array(ids), np.array(where))])
    (top1,) = best_fillings(lp, [5, 3], 1, utf8=False)
    expected = oracle_probs(checkpoint[1], ids)[where][:, 6:].argmax(axis=1)
    assert b"".join(top1.spans) == bytes(expected.astype(np.uint8).tolist())


@torch.no_grad()
def test_unpadded_batched_and_masked_only_equal_the_full_padded_computation(checkpoint, ours):
    hf = checkpoint[1]
    texts = ["x[MASK:3]y", "A longer text, with [MASK:6] in the middle of it.", "[MASK:1]é", "ab[MASK:2]cd ef"]
    jobs = []
    expected = []
    for text in texts:
        ids = oracle_ids(text)
        where = masked_positions(ids)
        jobs.append((np.array(ids), np.array(where)))
        padded = torch.zeros(1, POSITIONS, dtype=torch.long)  # transformers' way: pad to every position
        padded[0, :len(ids)] = torch.tensor(ids)
        mask = torch.zeros(1, POSITIONS, dtype=torch.long)
        mask[0, :len(ids)] = 1
        logits = hf(inputs=padded, attention_mask=mask).logits[0]
        expected.append(torch.softmax(logits.double(), -1)[where][:, 6:].numpy())
    batched = byte_log_probs(ours, jobs, max_rows=3)  # one padded batch of three, one of one
    for got, want in zip(batched, expected):
        np.testing.assert_allclose(np.exp(got), want, atol=TOL)
    for job, got in zip(jobs, batched):  # and the same as each text alone, unpadded
        (alone,) = byte_log_probs(ours, [job])
        np.testing.assert_allclose(alone, got, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The search: exact top-k.

def brute_force(lp: np.ndarray, spans: list[int], alphabet: list[int], k: int, utf8: bool = True):
    """The k best fillings by enumerating every byte string over `alphabet`, validity by bytes.decode."""
    scored = []
    for combo in itertools.product(alphabet, repeat=lp.shape[0]):
        data = bytes(combo)
        parts, start = [], 0
        for n in spans:
            parts.append(data[start:start + n])
            start += n
        if utf8:
            try:
                for part in parts:
                    part.decode("utf-8")
            except UnicodeDecodeError:
                continue
        scored.append((sum(lp[i, b] for i, b in enumerate(combo)), tuple(parts)))
    scored.sort(key=lambda item: -item[0])
    return scored[:k]


# ASCII, 2-, 3- and 4-byte leads, continuation bytes of several ranges, and bytes never valid.
WIDE_ALPHABET = [0x41, 0x7A, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xED, 0xA0, 0xF0, 0x9F, 0x80, 0xC0, 0xFF]
NARROW_ALPHABET = [0x41, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0x80, 0xFF]


@pytest.mark.parametrize("utf8", [True, False])
@pytest.mark.parametrize("spans,alphabet", [([4], WIDE_ALPHABET), ([3, 2], NARROW_ALPHABET),
                                            ([1, 2, 2], NARROW_ALPHABET)])
def test_top_k_equals_brute_force_on_a_vocabulary_slice(utf8, spans, alphabet):
    rng = np.random.default_rng(7)
    lp = np.full((sum(spans), 256), -np.inf)
    lp[:, alphabet] = rng.normal(size=(sum(spans), len(alphabet))) * 2
    expected = brute_force(lp, spans, alphabet, 40, utf8)
    got = best_fillings(lp, spans, 40, utf8=utf8)
    assert [f.spans for f in got] == [parts for _, parts in expected]
    np.testing.assert_allclose([f.log_prob for f in got], [score for score, _ in expected], atol=1e-9)


def test_top_k_stops_when_fewer_valid_fillings_exist():
    lp = np.full((2, 256), -np.inf)
    lp[0, [0x41, 0xC3]] = [-1.0, -0.5]
    lp[1, [0x42, 0xA9]] = [-2.0, -0.1]
    got = best_fillings(lp, [2], 10)
    assert [f.spans[0] for f in got] == [b"\xc3\xa9", b"AB"]  # A+0xA9 and 0xC3+B are not UTF-8
    assert got[0].spans[0].decode("utf-8") == "é"


def test_top1_is_the_per_byte_argmax_when_that_is_valid_utf8():
    rng = np.random.default_rng(1)
    lp = rng.normal(size=(9, 256))
    lp[np.arange(9), list(b"caf\xc3\xa9 ok!")] = 10.0  # argmax spells valid UTF-8
    (whole,) = best_fillings(lp, [9], 1)
    assert whole.spans == (b"caf\xc3\xa9 ok!",)
    # split so that a span would end inside "é": then the argmax is invalid and must be skipped
    (top1,) = best_fillings(lp, [4, 5], 1)
    assert b"".join(top1.spans) != b"caf\xc3\xa9 ok!"
    assert all(is_valid_utf8(span) for span in top1.spans)


def test_utf8_automaton_agrees_with_python_on_all_one_and_two_byte_strings():
    for length in (1, 2):
        for combo in itertools.product(range(256), repeat=length):
            data = bytes(combo)
            try:
                data.decode("utf-8")
                valid = True
            except UnicodeDecodeError:
                valid = False
            assert is_valid_utf8(data) == valid, data


def test_best_log_prob_is_the_top1_score():
    rng = np.random.default_rng(2)
    lp = rng.normal(size=(6, 256))
    assert best_log_prob(lp, [2, 4]) == pytest.approx(best_fillings(lp, [2, 4], 1)[0].log_prob)


# ----------------------------------------------------------------------------------------------------------
# The command.

def test_cli_top_k_equals_brute_force_over_every_two_byte_filling(capsys, checkpoint):
    text = "ab [MASK:2] cd"
    code, records, err = run_json(capsys, checkpoint, text, "--top-k", "7")
    assert code == 0, err
    ids = oracle_ids(text)
    where = masked_positions(ids)
    probs = oracle_probs(checkpoint[1], ids)[where][:, 6:]
    joint = probs[0][:, None] * probs[1][None, :]
    ranked = []
    for first, second in zip(*np.unravel_index(np.argsort(-joint, axis=None), joint.shape)):
        try:
            fill = bytes([first, second]).decode("utf-8")
        except UnicodeDecodeError:
            continue
        ranked.append((fill, joint[first, second]))
        if len(ranked) == 7:
            break
    predictions = records[0]["predictions"]
    assert [p["fills"] for p in predictions] == [[fill] for fill, _ in ranked]
    np.testing.assert_allclose([p["score"] for p in predictions], [s for _, s in ranked], rtol=1e-3)


def test_json_schema(capsys, checkpoint):
    code, records, err = run_json(capsys, checkpoint, "One [MASK:3] two.", "-k", "3")
    assert code == 0 and err == ""
    (record,) = records
    assert set(record) == {"input", "predictions", "masks"}
    assert record["input"] == "One [MASK:3] two."
    assert record["masks"] == [{"length": 3, "chosen": False}]
    assert len(record["predictions"]) == 3
    scores = [p["score"] for p in record["predictions"]]
    assert scores == sorted(scores, reverse=True)
    for prediction in record["predictions"]:
        assert set(prediction) == {"text", "fills", "score", "log_prob"}
        (fill,) = prediction["fills"]
        assert isinstance(fill, str) and len(fill.encode("utf-8")) == 3
        assert prediction["text"] == f"One {fill} two."
        assert prediction["score"] == pytest.approx(math.exp(prediction["log_prob"]))


def test_multi_mask_scores_are_products_of_transformers_probabilities(capsys, checkpoint):
    text = "[MASK:2] is a [MASK:1] of [MASK:3]!"
    code, records, err = run_json(capsys, checkpoint, text, "-k", "4")
    assert code == 0, err
    ids = oracle_ids(text)
    where = masked_positions(ids)
    probs = oracle_probs(checkpoint[1], ids)[where][:, 6:]
    for prediction in records[0]["predictions"]:
        fills = prediction["fills"]
        assert [len(f.encode("utf-8")) for f in fills] == [2, 1, 3]
        assert prediction["text"] == f"{fills[0]} is a {fills[1]} of {fills[2]}!"
        data = b"".join(f.encode("utf-8") for f in fills)
        assert prediction["score"] == pytest.approx(np.prod(probs[np.arange(6), list(data)]), rel=1e-3)


def test_multibyte_characters_around_spans_are_counted_in_bytes(capsys, checkpoint):
    text = "café [MASK:2] naïve ü[MASK:3]€ 日本"
    code, records, err = run_json(capsys, checkpoint, text, "-k", "2")
    assert code == 0, err
    ids = oracle_ids(text)
    where = masked_positions(ids)
    assert len(ids) == len(text.replace("[MASK:2]", "xx").replace("[MASK:3]", "xxx").encode("utf-8"))
    probs = oracle_probs(checkpoint[1], ids)[where][:, 6:]
    for prediction in records[0]["predictions"]:
        first, second = prediction["fills"]
        assert prediction["text"] == f"café {first} naïve ü{second}€ 日本"
        data = (first + second).encode("utf-8")
        assert len(data) == 5
        assert prediction["score"] == pytest.approx(np.prod(probs[np.arange(5), list(data)]), rel=1e-3)


def test_multibyte_fillings_inside_spans_come_out_as_characters(ours):
    # Steer the search with the model's own distributions plus a bias towards "é" (C3 A9) in a 2-byte span.
    ids = oracle_ids("x[MASK:2]y")
    (lp,) = byte_log_probs(ours, [(np.array(ids), np.array(masked_positions(ids)))])
    lp[0, 0xC3] += 50.0
    lp[1, 0xA9] += 50.0
    (top,) = best_fillings(lp, [2], 1)
    assert top.spans[0].decode("utf-8") == "é"


def test_stdin_one_text_per_line_reports_bad_lines_and_goes_on(capsys, checkpoint, monkeypatch):
    data = b"first [MASK:2] line\n\xff\xfe broken\nno mask here\n\nlast [MASK:1]\r\n"
    code, records, err = run_json(capsys, checkpoint, "-", "-k", "1", stdin=data, monkeypatch=monkeypatch)
    assert code == 1
    assert [r["line"] for r in records] == [1, 2, 3, 5]  # the blank line 4 is skipped, not an error
    assert "predictions" in records[0] and "predictions" in records[3]
    assert records[3]["input"] == "last [MASK:1]"
    assert [r.get("error") is not None for r in records] == [False, True, True, False]
    lines = err.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("perceiver: error: -: line 2: not valid UTF-8")
    assert lines[1].startswith("perceiver: error: -: line 3: no [MASK]")
    assert lines[2] == "perceiver: 1 blank line of standard input skipped"
    assert "Traceback" not in err


def test_stdin_blank_lines_alone_set_no_failure_and_quiet_hides_their_count(capsys, checkpoint, monkeypatch):
    code, records, err = run_json(capsys, checkpoint, "-", "-k", "1", "-q", stdin=b"\n  \na [MASK:1] b\n\r\n",
                                  monkeypatch=monkeypatch)
    assert code == 0, err
    assert [r["line"] for r in records] == [3] and err == ""
    code, records, err = run_json(capsys, checkpoint, "-", "-k", "1", stdin=b"\n\na [MASK:1] b\n",
                                  monkeypatch=monkeypatch)
    assert code == 0 and err == "perceiver: 2 blank lines of standard input skipped\n"


def test_stdin_batch_equals_each_text_alone(capsys, checkpoint, monkeypatch):
    texts = ["a [MASK:1] b", "A much longer line that has one [MASK:4] in it.", "[MASK:2]", "x[MASK]y", "é[MASK:3]"]
    code, batched, err = run_json(capsys, checkpoint, "-", "-k", "3", "--max-span", "3",
                                  stdin="\n".join(texts).encode("utf-8"), monkeypatch=monkeypatch)
    assert code == 0, err
    for text, record in zip(texts, batched):
        code, (alone,), _ = run_json(capsys, checkpoint, text, "-k", "3", "--max-span", "3")
        assert [p["fills"] for p in alone["predictions"]] == [p["fills"] for p in record["predictions"]]
        np.testing.assert_allclose([p["log_prob"] for p in alone["predictions"]],
                                   [p["log_prob"] for p in record["predictions"]], atol=1e-4)


def test_bare_mask_chooses_the_length_with_the_best_mean_log_prob_per_byte(capsys, checkpoint, ours):
    code, (record,), err = run_json(capsys, checkpoint, "Hello [MASK] world", "--max-span", "4", "-k", "1")
    assert code == 0, err
    (mask,) = record["masks"]
    assert mask["chosen"] is True
    scores = {int(n): s for n, s in mask["length_scores"].items()}
    assert sorted(scores) == [1, 2, 3, 4]
    for n in range(1, 5):  # each candidate scored from transformers' distributions for that many masked bytes
        ids = oracle_ids(f"Hello [MASK:{n}] world")
        lp = np.log(oracle_probs(checkpoint[1], ids)[masked_positions(ids)][:, 6:])
        assert scores[n] == pytest.approx(best_log_prob(lp, [n]) / n, abs=1e-4)
    assert mask["length"] == max(scores, key=lambda n: (scores[n], -n))
    (fill,) = record["predictions"][0]["fills"]
    assert len(fill.encode("utf-8")) == mask["length"]


def test_several_bare_masks_never_score_worse_than_a_common_length(capsys, checkpoint):
    code, (record,), err = run_json(capsys, checkpoint, "[MASK] and [MASK:2] or [MASK].", "--max-span", "3",
                                    "-k", "1")
    assert code == 0, err
    lengths = [m["length"] for m in record["masks"]]
    assert [m["chosen"] for m in record["masks"]] == [True, False, True]
    assert lengths[1] == 2

    def score(a: int, c: int) -> float:
        ids = oracle_ids(f"[MASK:{a}] and [MASK:2] or [MASK:{c}].")
        lp = np.log(oracle_probs(checkpoint[1], ids)[masked_positions(ids)][:, 6:])
        return best_log_prob(lp, [a, 2, c]) / (a + 2 + c)

    chosen = score(lengths[0], lengths[2])
    assert all(chosen >= score(n, n) - 1e-6 for n in (1, 2, 3))
    prediction = record["predictions"][0]
    assert [len(f.encode("utf-8")) for f in prediction["fills"]] == lengths


def test_long_text_is_filled_from_windows_around_each_mask(capsys, checkpoint):
    text = ("Ünïcödé " * 6 + "start [MASK:3] here. " + "filler words, " * 8 + "then [MASK:2] and [MASK:1] near. "
            + "more text é " * 8 + "end [MASK:4]")
    assert len(text.encode("utf-8")) > 3 * POSITIONS
    code, (record,), err = run_json(capsys, checkpoint, text, "-k", "2")
    assert code == 0, err
    assert "longer than the model's 64 positions" in record["note"]
    ids = oracle_ids(text)
    where = masked_positions(ids)
    windows = record["windows"]
    assert len(windows) >= 2
    covered = []
    for start, stop in windows:
        assert 0 <= start < stop <= len(ids) and stop - start <= POSITIONS
        # windows start and end on character boundaries of the context
        assert not 0x80 <= ids[start] - 6 < 0xC0 or ids[start] == 3
        assert stop == len(ids) or not 0x80 <= ids[stop] - 6 < 0xC0
        covered.append([p for p in where if start <= p < stop])
    # every masked byte lies in a window, and each mask's bytes in one window: compare with transformers there
    for prediction in record["predictions"]:
        data = b"".join(f.encode("utf-8") for f in prediction["fills"])
        expected, seen = 1.0, set()
        for (start, stop), positions in zip(windows, covered):
            positions = [p for p in positions if p not in seen]
            probs = oracle_probs(checkpoint[1], ids[start:stop])
            for p in positions:
                expected *= probs[p - start, 6 + data[where.index(p)]]
            seen.update(positions)
        assert seen == set(where)
        assert prediction["score"] == pytest.approx(expected, rel=1e-3)


def test_windows_hold_whole_spans_and_stay_inside_the_text():
    ids, spans = masked_ids([b"a" * 100, b"b" * 5, b"c" * 200, b""], [10, 20, 30])
    windows = plan_windows(ids, spans, 40)
    # masks 0 and 1 (bytes 100..135) fit one window of 40 together; mask 2 needs its own
    assert [w.masks for w in windows] == [(0, 1), (2,)]
    for window in windows:
        assert 0 <= window.start and window.stop <= len(ids) and window.stop - window.start <= 40
        for i in window.masks:
            assert window.start <= spans[i][0] and spans[i][0] + spans[i][1] <= window.stop
    assert sorted(i for w in windows for i in w.masks) == [0, 1, 2]
    assert (ids[spans[2][0]:] == MASK_ID).all()


def test_table_output_names_the_fillings_and_the_chosen_length(capsys, checkpoint):
    code, out, err = run_cli(capsys, "Say [MASK] now", "--weights", str(checkpoint[0]), "--max-span", "2", "-k", "2")
    assert code == 0, err
    assert "Say [MASK] now" in out and "chose" in out and "probability" in out


@pytest.mark.parametrize("text,message", [
    ("no mask here", "no [MASK] or [MASK:n] in the text"),
    ("", "empty text"),
    ("a [MASK:0] b", "masks no bytes"),
    ("a [MASK:99999999999] b", "far more bytes"),
    ("a [MASK:x] b", "malformed mask"),
    ("x [MASK:65] y", "mask 1 spans 65 bytes, more than the model's 64 positions"),
])
def test_a_bad_text_argument_is_a_failed_record_and_the_next_text_runs(capsys, checkpoint, text, message):
    code, records, err = run_json(capsys, checkpoint, text, "ok [MASK:1]", "-k", "1")
    assert code == 1
    assert records[0]["input"] == text and message in records[0]["error"] and "predictions" not in records[0]
    assert "predictions" in records[1] and records[1]["input"] == "ok [MASK:1]"
    (line,) = err.splitlines()
    assert line.startswith("perceiver: error: text 1") and message in line


@pytest.mark.parametrize("args,message", [
    (["a [MASK] b", "--top-k", "0"], "--top-k must be"),
    (["a [MASK] b", "--max-span", "0"], "--max-span must be"),
    (["-", "-"], "only once"),
])
def test_bad_arguments_are_one_line_usage_errors(capsys, checkpoint, args, message):
    code, out, err = run_cli(capsys, *args, "--weights", str(checkpoint[0]))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("perceiver: error: ") and message in err


def test_a_span_longer_than_the_model_is_a_failed_text_or_a_bad_line(capsys, checkpoint, monkeypatch):
    code, out, err = run_cli(capsys, "x [MASK:65] y", "--weights", str(checkpoint[0]))
    assert code == 1 and out == ""
    assert err.strip() == 'perceiver: error: text 1 "x [MASK:65] y": mask 1 spans 65 bytes, more than the ' \
                          "model's 64 positions"
    code, records, err = run_json(capsys, checkpoint, "-", stdin=b"x [MASK:65] y\nok [MASK:1]\n",
                                  monkeypatch=monkeypatch)
    assert code == 1
    assert "line 1: mask 1 spans 65 bytes" in err and "error" in records[0] and "predictions" in records[1]


def test_fill_masks_returns_one_result_per_text_in_order(ours):
    texts = [([b"a", b"b"], (1,)), ([b"", b"long" * 5], (3,)), ([b"x", b"y", b"z"], (2, 1))]
    results = fill_masks(ours, texts, top_k=2, max_span=4)
    assert [r.lengths for r in results] == [(1,), (3,), (2, 1)]
    assert all(len(r.fillings) == 2 for r in results)


@pytest.mark.parametrize("shift", range(5))
def test_windows_do_not_start_or_end_inside_a_character_of_the_context(shift):
    # "é€" is 5 bytes: shifting the mask by 0..4 ASCII bytes moves the window's ends through every byte of it
    ids, spans = masked_ids([("é€" * 30 + "a" * shift).encode(), ("b" * shift + "€é" * 30).encode()], [5])
    ids_text = [int(t) for t in ids]
    (window,) = plan_windows(ids, spans, 41)
    assert window.stop - window.start <= 41
    assert window.start <= spans[0][0] and spans[0][0] + 5 <= window.stop
    assert not 0x80 <= ids_text[window.start] - 6 < 0xC0
    assert window.stop == len(ids_text) or not 0x80 <= ids_text[window.stop] - 6 < 0xC0
    assert window.stop - window.start >= 41 - 3 - 3  # trimmed by at most a character at each end
