"""`perceiver classify`: preprocessing and logits equal transformers', batches, inputs, output schema, bad files.

Numeric references are transformers' PerceiverImageProcessorPil and PerceiverForImageClassification* on tiny
random checkpoints; real photos are tests/data/images (always) and ../shared/data/images (when present).
"""

from __future__ import annotations

import io
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.tasks.classify import class_names
from perceiver_cli.load import load_model
from perceiver_cli.core.vision import prefetch_batches, top_k_softmax
from perceiver_cli.io.imagenet import centre_crop_box, preprocess_image, resize_crop
from perceiver_cli.io.images import read_image
from tiny_models import TINY_CONFIGS, make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "data" / "images" / "deepmind_dalmation.jpg"
SHARED_PHOTOS = sorted((REPO.parent / "shared" / "data" / "images").glob("*")) if (
    REPO.parent / "shared" / "data" / "images").is_dir() else []
VISION_KINDS = ("vision-conv", "vision-fourier", "vision-learned")
# vision-learned's learned positions are fixed to image_size**2 tokens; classify feeds 224x224.
OVERRIDES = {"vision-learned": {"image_size": 224}}
TINY_LABELS = len(TINY_CONFIGS["vision-conv"]["id2label"])


def _transformers_processor():
    from transformers import PerceiverImageProcessorPil

    return PerceiverImageProcessorPil()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """One tiny random checkpoint per vision class: (directory, transformers model)."""
    root = tmp_path_factory.mktemp("classify-weights")
    return {kind: (root / kind, make_tiny_checkpoint(kind, root / kind, seed=3, **OVERRIDES.get(kind, {})))
            for kind in VISION_KINDS}


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["classify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def _save_rgb(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- preprocessing

def _photo_arrays() -> list[tuple[str, np.ndarray]]:
    photo = read_image(PHOTO)
    arrays = [(PHOTO.name, photo), (PHOTO.name + " transposed", np.ascontiguousarray(photo.transpose(1, 0, 2))),
              # short side 256: the crop is exactly 224 and needs no resize
              (PHOTO.name + " 256 rows", np.ascontiguousarray(photo[:256, :301])),
              (PHOTO.name + " 2x5 pixels", np.ascontiguousarray(photo[:2, :5]))]
    arrays += [(path.name, read_image(path)) for path in SHARED_PHOTOS]
    return arrays


def test_preprocessing_equals_transformers_image_processor_on_real_photos():
    processor = _transformers_processor()
    for name, rgb in _photo_arrays():
        expected = processor(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"][0]
        ours = preprocess_image(rgb)
        assert ours.shape == expected.shape == (3, 224, 224), name
        assert ours.dtype == np.float32
        assert np.abs(ours - expected).max() <= 1e-5, name


def test_centre_crop_rounds_offsets_down():
    # 338x508: side int(0.875 * 338) = 295; top (338 - 295) // 2 = 21; left (508 - 295) // 2 = 106 (213 / 2)
    assert centre_crop_box(338, 508) == (21, 106, 295)
    assert centre_crop_box(500, 335) == (103, 21, 293)  # 207 // 2, 42 // 2


def test_preprocessing_writes_into_the_given_buffer():
    out = np.full((3, 224, 224), np.nan, dtype=np.float32)
    result = preprocess_image(_noise(40, 60, 0), out)
    assert result is out and np.isfinite(out).all()
    # A white pixel normalises to (1 - mean) / std per channel.
    white = preprocess_image(np.full((10, 10, 3), 255, dtype=np.uint8))
    assert np.allclose(white[:, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], atol=1e-6)


def test_one_pixel_image_is_refused_in_core():
    with pytest.raises(ValueError, match="too small"):
        resize_crop(np.zeros((1, 1, 3), dtype=np.uint8))


def test_top_k_softmax_is_sorted_and_clamped():
    logits = torch.tensor([[0.0, math.log(2.0), math.log(4.0)]])
    scores, indices = top_k_softmax(logits, 2)
    assert indices.tolist() == [[2, 1]]
    assert np.allclose(scores, [[4 / 7, 2 / 7]], atol=1e-6)
    scores, indices = top_k_softmax(logits, 10)
    assert indices.tolist() == [[2, 1, 0]]


# ---------------------------------------------------------------------------------------------- pipeline

def test_prefetch_prepares_next_batches_before_the_current_one_is_used():
    next_batch_started = threading.Event()

    def prepare(item: int, out: np.ndarray) -> None:
        if item == 7:
            raise ValueError("bad item")
        if item == 3:  # first item of the second batch
            next_batch_started.set()
        out.fill(item)

    with ThreadPoolExecutor(max_workers=2) as executor:
        batches = prefetch_batches(range(9), prepare, 3, executor)
        assert next_batch_started.wait(10)  # nothing has been consumed yet
        collected = list(batches)
    assert [batch.items for batch in collected] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert collected[2].ok == [0, 2] and list(collected[2].errors) == [1]
    assert "bad item" in str(collected[2].errors[1])
    assert collected[2].pixels.shape == (2, 3, 224, 224)
    assert collected[2].pixels[:, 0, 0, 0].tolist() == [6.0, 8.0]
    assert collected[1].pixels[:, 0, 0, 0].tolist() == [3.0, 4.0, 5.0]


# ---------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("kind", VISION_KINDS)
@torch.no_grad()
def test_logits_equal_transformers_on_real_photos(checkpoints, kind):
    directory, hf = checkpoints[kind]
    photos = [read_image(PHOTO)] + [read_image(path) for path in SHARED_PHOTOS[3:4]]  # landscape, portrait
    processor = _transformers_processor()
    expected = hf(inputs=processor(images=[Image.fromarray(p) for p in photos], return_tensors="pt")
                  ["pixel_values"]).logits
    ours = load_model(str(directory), device="cpu", numerics="transformers")
    pixels = torch.from_numpy(np.stack([preprocess_image(p) for p in photos]))
    assert (ours(pixels) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", VISION_KINDS)
@torch.no_grad()
def test_cli_scores_equal_transformers_softmax(checkpoints, kind, capsys):
    directory, hf = checkpoints[kind]
    processor = _transformers_processor()
    logits = hf(inputs=processor(images=Image.open(PHOTO).convert("RGB"), return_tensors="pt")["pixel_values"]).logits
    probabilities = torch.softmax(logits[0], dim=-1)
    code, out, err = _run(capsys, str(PHOTO), "--weights", str(directory), "--numerics", "transformers",
                          "--top-k", str(TINY_LABELS), "--json")
    assert code == 0, err
    (record,) = _json_lines(out)
    assert record["input"] == str(PHOTO)
    expected_order = torch.argsort(probabilities, descending=True).tolist()
    assert [p["index"] for p in record["predictions"]] == expected_order
    for prediction in record["predictions"]:
        assert abs(prediction["score"] - probabilities[prediction["index"]].item()) <= 1e-5


# ---------------------------------------------------------------------------------------------- output

def test_json_schema_and_labels_from_config(checkpoints, capsys, tmp_path):
    image = _save_rgb(tmp_path / "a.png", _noise(30, 40, 1))
    code, out, err = _run(capsys, str(image), "--weights", str(checkpoints["vision-conv"][0]), "--json", "-k", "3")
    assert code == 0 and err == ""
    (record,) = _json_lines(out)
    assert set(record) == {"input", "predictions"}
    assert record["input"] == str(image)
    predictions = record["predictions"]
    assert len(predictions) == 3
    for prediction in predictions:
        assert set(prediction) == {"label", "index", "score"}
        assert isinstance(prediction["index"], int) and isinstance(prediction["score"], float)
        assert prediction["label"] == f"class {prediction['index']}"  # the tiny config's id2label
        assert 0.0 < prediction["score"] <= 1.0
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)


def test_top_k_larger_than_the_classes_lists_every_class(checkpoints, capsys, tmp_path):
    image = _save_rgb(tmp_path / "a.png", _noise(30, 40, 2))
    code, out, _ = _run(capsys, str(image), "--weights", str(checkpoints["vision-conv"][0]), "--json", "-k", "50")
    assert code == 0
    predictions = _json_lines(out)[0]["predictions"]
    assert sorted(p["index"] for p in predictions) == list(range(TINY_LABELS))
    assert abs(sum(p["score"] for p in predictions) - 1.0) < 1e-5


def test_shipped_imagenet_names_replace_generic_labels(tmp_path, capsys):
    directory = tmp_path / "imagenet-sized"
    make_tiny_checkpoint("vision-conv", directory, id2label=None, num_labels=1000)
    capsys.readouterr()
    assert json.loads((directory / "config.json").read_text())["id2label"]["281"] == "LABEL_281"
    names = class_names({i: f"LABEL_{i}" for i in range(1000)}, 1000)
    assert names[0] == "tench, Tinca tinca" and names[281] == "tabby, tabby cat" and names[999].startswith("toilet")
    image = _save_rgb(tmp_path / "a.png", _noise(20, 20, 3))
    code, out, _ = _run(capsys, str(image), "--weights", str(directory), "--json", "-k", "1000")
    assert code == 0
    by_index = {p["index"]: p["label"] for p in _json_lines(out)[0]["predictions"]}
    assert by_index[281] == "tabby, tabby cat" and by_index[1] == "goldfish, Carassius auratus"


def test_names_from_config_are_kept():
    assert class_names({0: "cat", 1: "dog"}, 2) == ["cat", "dog"]


def test_default_output_is_a_table_on_stdout(checkpoints, capsys, tmp_path):
    image = _save_rgb(tmp_path / "photo [1].png", _noise(30, 40, 4))
    code, out, err = _run(capsys, str(image), "--weights", str(checkpoints["vision-conv"][0]), "-k", "2")
    assert code == 0 and err == ""
    assert "photo [1].png" in out  # brackets printed as they are, not read as markup
    assert out.splitlines()[0] == str(image)  # the input heads its rows
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(lines) == 2
    assert lines[0].split()[0] == "1" and lines[1].split()[0] == "2"
    assert all(0.0 <= float(line.split()[1]) <= 1.0 for line in lines)


# ---------------------------------------------------------------------------------------------- inputs

def test_directory_is_searched_recursively_for_images_in_sorted_order(checkpoints, capsys, tmp_path):
    folder = tmp_path / "photos"
    (folder / "b-sub").mkdir(parents=True)
    (folder / "a-sub").mkdir()
    _save_rgb(folder / "z.png", _noise(20, 30, 5))
    _save_rgb(folder / "b-sub" / "x.jpg", _noise(20, 30, 6))
    _save_rgb(folder / "a-sub" / "y.PNG", _noise(20, 30, 7))
    _save_rgb(folder / "c.bmp", _noise(20, 30, 8))
    (folder / "notes.txt").write_text("not an image")
    code, out, err = _run(capsys, str(folder), "--weights", str(checkpoints["vision-conv"][0]), "--json")
    assert code == 0, err
    paths = [record["input"] for record in _json_lines(out)]
    # Each folder's images in name order, then its subfolders in name order (as `ls -R` lists them).
    assert paths == [str(folder / "c.bmp"), str(folder / "z.png"), str(folder / "a-sub" / "y.PNG"),
                     str(folder / "b-sub" / "x.jpg")]


def test_glob_patterns_are_expanded(checkpoints, capsys, tmp_path):
    for name, seed in (("b.png", 1), ("a.png", 2), ("c.jpg", 3)):
        _save_rgb(tmp_path / name, _noise(20, 30, seed))
    code, out, _ = _run(capsys, str(tmp_path / "*.png"), "--weights", str(checkpoints["vision-conv"][0]), "--json")
    assert code == 0
    assert [r["input"] for r in _json_lines(out)] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


@pytest.mark.parametrize(("names", "separate"), [
    (["second image.jpg", "first.png"], lambda a, b: f"{a}\r\n\n{b}\n"),  # lines: CRLF and blank lines too
    (["two\nlines.png", "plain.png"], lambda a, b: f"{a}\0{b}\0"),  # find -print0: newlines inside names
])
def test_paths_are_read_from_stdin(checkpoints, capsys, tmp_path, monkeypatch, names, separate):
    paths = [_save_rgb(tmp_path / name, _noise(20, 30, 9 + i)) for i, name in enumerate(names)]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(separate(*paths).encode())))
    code, out, err = _run(capsys, "-", "--weights", str(checkpoints["vision-conv"][0]), "--json")
    assert code == 0, err
    assert [r["input"] for r in _json_lines(out)] == [str(p) for p in paths]


def test_empty_stdin_is_reported(checkpoints, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = _run(capsys, "-", "--weights", str(checkpoints["vision-conv"][0]))
    assert code == 1 and out == ""
    assert err.strip() == "perceiver: error: -: no image paths on standard input"


def test_unreadable_files_in_the_middle_of_a_batch_are_reported_in_order(checkpoints, capsys, tmp_path):
    weights = str(checkpoints["vision-conv"][0])
    good = [_save_rgb(tmp_path / f"good{i}.png", _noise(25, 35, 20 + i)) for i in range(3)]
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(_noise(64, 64, 30)).save(truncated, format="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:300])
    text = tmp_path / "text.png"
    text.write_text("hello")
    order = [good[0], truncated, good[1], tmp_path / "missing.png", text, good[2]]
    code, out, err = _run(capsys, *map(str, order), "--weights", weights, "--json", "--batch-size", "3")
    assert code == 1
    records = _json_lines(out)
    assert [r["input"] for r in records] == [str(p) for p in order]
    assert [set(r) for r in records] == [{"input", "predictions"}, {"input", "error"}, {"input", "predictions"},
                                         {"input", "error"}, {"input", "error"}, {"input", "predictions"}]
    assert "truncated" in records[1]["error"] and "no such file" in records[3]["error"]
    assert "not a readable image" in records[4]["error"]
    assert all("\n" not in r.get("error", "") for r in records)
    # The good ones get the same answer as when run alone.
    code, alone, _ = _run(capsys, str(good[1]), "--weights", weights, "--json")
    assert _json_lines(alone)[0]["predictions"][0]["index"] == records[2]["predictions"][0]["index"]
    assert abs(_json_lines(alone)[0]["predictions"][0]["score"] - records[2]["predictions"][0]["score"]) < 1e-5


def test_unreadable_file_without_json_is_one_line_on_stderr(checkpoints, capsys, tmp_path):
    good = _save_rgb(tmp_path / "good.png", _noise(25, 35, 40))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    tiny = _save_rgb(tmp_path / "dot.png", _noise(1, 1, 41))
    code, out, err = _run(capsys, str(bad), str(good), str(tiny), "--weights", str(checkpoints["vision-conv"][0]))
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"perceiver: error: {bad}: ")
    assert lines[1].startswith(f"perceiver: error: {tiny}: ") and "too small" in lines[1]
    assert str(good) in out and str(bad) not in out and "Traceback" not in err


def _odd_mode_files(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """Files in odd modes and formats, each with the RGB pixels it must be read as (computed here)."""
    rng = np.random.default_rng(50)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    cases = []
    grey = rgb[:, :, 0]
    Image.fromarray(grey, mode="L").save(folder / "grey.png")
    cases.append((folder / "grey.png", np.repeat(grey[:, :, None], 3, axis=2)))
    rgba = np.concatenate([rgb, rng.integers(0, 256, (24, 32, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    cases.append((folder / "alpha.png", rgb))  # alpha dropped, colours kept
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, (24, 32), dtype=np.uint8)
    paletted = Image.fromarray(indices, mode="P")
    paletted.putpalette(palette.flatten().tolist())
    paletted.save(folder / "palette.png")
    cases.append((folder / "palette.png", palette[indices]))
    paletted.save(folder / "first-frame.gif")
    cases.append((folder / "first-frame.gif", palette[indices]))
    wide = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
    Image.fromarray(wide).save(folder / "sixteen.png")
    eight = ((wide.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    cases.append((folder / "sixteen.png", np.repeat(eight[:, :, None], 3, axis=2)))
    Image.fromarray(rgb).save(folder / "lossless.webp", lossless=True)
    cases.append((folder / "lossless.webp", rgb))
    Image.fromarray(rgb).save(folder / "plain.tiff")
    cases.append((folder / "plain.tiff", rgb))
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    rotated.save(folder / "rotated.png", exif=exif)
    cases.append((folder / "rotated.png", np.ascontiguousarray(np.rot90(rgb, k=-1))))
    return cases


def test_odd_image_modes_classify_as_their_rgb_pixels(checkpoints, capsys, tmp_path):
    odd = tmp_path / "odd"
    plain = tmp_path / "plain"
    odd.mkdir()
    plain.mkdir()
    cases = _odd_mode_files(odd)
    twins = [_save_rgb(plain / f"{path.stem}.png", pixels) for path, pixels in cases]
    weights = str(checkpoints["vision-conv"][0])
    code, out, err = _run(capsys, *[str(p) for p, _ in cases], *map(str, twins), "--weights", weights, "--json",
                          "-k", str(TINY_LABELS), "-b", "4")
    assert code == 0, err
    records = _json_lines(out)
    assert len(records) == 2 * len(cases)
    for record, twin in zip(records[:len(cases)], records[len(cases):]):
        assert [p["index"] for p in record["predictions"]] == [p["index"] for p in twin["predictions"]], record["input"]
        assert np.allclose([p["score"] for p in record["predictions"]], [p["score"] for p in twin["predictions"]],
                           atol=1e-5), record["input"]


def test_batch_size_does_not_change_results(checkpoints, capsys, tmp_path):
    for i in range(5):
        _save_rgb(tmp_path / f"{i}.png", _noise(20 + i, 30, 60 + i))
    weights = str(checkpoints["vision-conv"][0])
    runs = []
    for batch_size in ("1", "3"):
        code, out, err = _run(capsys, str(tmp_path), "--weights", weights, "--json", "-b", batch_size,
                              "-k", str(TINY_LABELS))
        assert code == 0, err
        runs.append(_json_lines(out))
    one, three = runs
    assert [r["input"] for r in one] == [r["input"] for r in three]
    for a, b in zip(one, three):
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert np.allclose([p["score"] for p in a["predictions"]], [p["score"] for p in b["predictions"]], atol=1e-5)


# ---------------------------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args,fragment", [
    ([], "give image files"),
    (["x.png", "--top-k", "0"], "--top-k"),
    (["x.png", "--batch-size", "0"], "--batch-size"),
    (["x.png", "--max-pixels", "0"], "--max-pixels"),
    (["x.png", "--model", "vision-conv", "--weights", "somewhere"], "either --model or --weights"),
])
def test_usage_errors_exit_2_with_one_line(capsys, args, fragment):
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_checkpoint_of_another_task_is_refused(tmp_path, capsys):
    make_tiny_checkpoint("language", tmp_path / "language")
    capsys.readouterr()  # transformers' own progress output while saving
    image = _save_rgb(tmp_path / "a.png", _noise(20, 20, 70))
    code, out, err = _run(capsys, str(image), "--weights", str(tmp_path / "language"))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cannot run 'classify'" in err


def test_learned_positions_for_another_image_size_are_refused(tmp_path, capsys):
    make_tiny_checkpoint("vision-learned", tmp_path / "learned16")  # image_size 16
    capsys.readouterr()
    image = _save_rgb(tmp_path / "a.png", _noise(20, 20, 71))
    code, out, err = _run(capsys, str(image), "--weights", str(tmp_path / "learned16"))
    assert code == 2 and out == ""
    assert "image_size 16" in err and len(err.strip().splitlines()) == 1


def test_only_bad_inputs_exit_1_without_loading_a_model(capsys, tmp_path):
    code, out, err = _run(capsys, str(tmp_path / "missing.jpg"), "--weights", str(tmp_path / "no-weights-here"))
    assert code == 1 and out == ""
    assert err.strip() == f"perceiver: error: {tmp_path / 'missing.jpg'}: no such file or folder"



@pytest.fixture
def terminal(monkeypatch):
    """Make every rich Console believe it writes to a terminal (as stderr does in an interactive shell)."""
    import rich.console

    class TerminalConsole(rich.console.Console):
        def __init__(self, *args, **kwargs):
            kwargs["force_terminal"] = True
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(rich.console, "Console", TerminalConsole)


def test_progress_bar_goes_to_a_terminal_stderr_and_never_to_stdout(checkpoints, capsys, tmp_path, terminal):
    for i in range(5):
        _save_rgb(tmp_path / f"{i}.png", _noise(20, 20, 80 + i))
    code, out, err = _run(capsys, str(tmp_path), "--weights", str(checkpoints["vision-conv"][0]), "--json", "-b", "2")
    assert code == 0
    assert "classifying" in err
    assert len(_json_lines(out)) == 5  # every stdout line is a result


def test_one_image_draws_no_progress_bar(checkpoints, capsys, tmp_path, terminal):
    image = _save_rgb(tmp_path / "one.png", _noise(20, 20, 90))
    code, out, err = _run(capsys, str(image), "--weights", str(checkpoints["vision-conv"][0]), "--json")
    assert code == 0 and err == "" and len(_json_lines(out)) == 1


def test_torch_threads_are_capped_by_usable_cpus_unless_the_user_chose(monkeypatch):
    from perceiver_cli import runtime as command

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        monkeypatch.setattr(command, "usable_cpus", lambda: 1)
        command.configure_threads()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        command.configure_threads()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_paths_from_stdin_are_reported_by_name(checkpoints, capsys, tmp_path, monkeypatch):
    good = _save_rgb(tmp_path / "good.png", _noise(20, 30, 95))
    missing = tmp_path / "gone.jpg"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{missing}\n{good}\n"))
    code, out, _ = _run(capsys, "-", "--weights", str(checkpoints["vision-conv"][0]), "--json")
    assert code == 1
    records = _json_lines(out)
    assert records[0] == {"input": str(missing), "error": "no such file or folder"}
    assert records[1]["input"] == str(good) and "predictions" in records[1]


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux thread priorities")
def test_cpu_decoding_threads_run_below_the_model_priority():
    import os

    from perceiver_cli.runtime import DECODE_NICENESS, resolve_runtime

    own = os.getpriority(os.PRIO_PROCESS, 0)
    with resolve_runtime("cpu", configure=False).decode_pool() as pool:
        niceness = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert niceness == min(19, own + DECODE_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the main thread keeps its priority


def test_default_batch_size_depends_on_the_device(checkpoints, capsys, tmp_path, monkeypatch):
    import perceiver_cli.core.vision as vision
    from perceiver_cli.runtime import resolve_runtime
    from perceiver_cli.tasks.classify import ClassifyTask

    CPU_BATCH_SIZE = ClassifyTask.cpu_batch_size
    assert resolve_runtime("cpu", None, None, ClassifyTask.cpu_batch_size, ClassifyTask.accelerator_batch_size,
                           configure=False).batch_size == CPU_BATCH_SIZE
    assert ClassifyTask.accelerator_batch_size > CPU_BATCH_SIZE
    seen = []
    real = vision.prefetch_batches

    def spy(items, prepare, batch_size, executor, ahead=2):
        seen.append(batch_size)
        return real(items, prepare, batch_size, executor, ahead)

    monkeypatch.setattr(vision, "prefetch_batches", spy)
    image = _save_rgb(tmp_path / "a.png", _noise(20, 20, 99))
    weights = str(checkpoints["vision-conv"][0])
    assert _run(capsys, str(image), "--weights", weights, "--device", "cpu")[0] == 0
    assert _run(capsys, str(image), "--weights", weights, "--device", "cpu", "-b", "5")[0] == 0
    assert seen == [CPU_BATCH_SIZE, 5]


@pytest.mark.parametrize("dtype", ["float16"])
def test_half_precision_on_the_cpu_is_one_usage_error_before_any_image_is_read(checkpoints, capsys, tmp_path, dtype):
    image = _save_rgb(tmp_path / "a.png", _noise(20, 20, 5))
    code, out, err = _run(capsys, str(image), "--weights", str(checkpoints["vision-conv"][0]), "--device", "cpu",
                          "--dtype", dtype)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and f"--dtype {dtype} is for accelerators" in err


# ---------------------------------------------------------------------------------------------- streaming

class _ReaderThatLeavesAfterOneLine(io.StringIO):
    """A stdout whose reader goes away after the first line (`| head -1`); records how many forward
    passes had run when that line arrived."""

    def __init__(self, passes: list):
        super().__init__()
        self.passes = passes
        self.seen_at_first_line = None

    def write(self, text: str) -> int:
        if self.seen_at_first_line is not None:
            raise BrokenPipeError
        if "\n" in text:
            self.seen_at_first_line = len(self.passes)
        return super().write(text)


@pytest.mark.parametrize("json_mode", [True, False])
def test_results_stream_as_each_batch_is_done_and_a_closed_reader_ends_the_run(checkpoints, tmp_path,
                                                                               monkeypatch, json_mode):
    import perceiver_cli.core.vision as vision

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        _save_rgb(folder / f"{i:02d}.png", _noise(20, 20, 200 + i))
    passes = []
    real = vision.classify_pixels

    def counting(*args, **kwargs):
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(vision, "classify_pixels", counting)
    out = _ReaderThatLeavesAfterOneLine(passes)
    monkeypatch.setattr("sys.stdout", out)
    args = [str(folder), "--weights", str(checkpoints["vision-conv"][0]), "-b", "1", "--device", "cpu"]
    code = main(["classify", *args, *(["--json"] if json_mode else [])])
    assert code == 0  # a reader that went away is not a failure
    assert out.seen_at_first_line == 1  # the first image was printed after one forward pass, not twelve
    assert len(passes) < 12  # and the run stopped instead of classifying the rest for nobody
