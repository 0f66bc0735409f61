"""`perceiver eval classify`: top-1/top-5 over an ImageNet-shaped folder equal a count over classify's own
predictions; both layouts; --limit; the paper's figure beside ours; mistakes in the dataset are named.

The checkpoint is tests/tiny_models.py's tiny random vision-conv (10 classes), so the class folders used
are the WordNet ids of classes 0-9; images are random noise made here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from tiny_models import make_tiny_checkpoint

SYNSETS = Path(__file__).resolve().parents[1] / "perceiver_cli" / "data" / "imagenet_synsets.txt"
IMAGENET_NAMES = Path(__file__).resolve().parents[1] / "perceiver_cli" / "data" / "imagenet1k.txt"
WNIDS = SYNSETS.read_text().split()
CLASSES = (0, 3, 7, 9)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-classify") / "vision-conv"
    make_tiny_checkpoint("vision-conv", folder, seed=3)
    return folder


def summary_of(out: str) -> dict:
    """The summary: the last line of --json output (the lines before are the items' records)."""
    return json.loads(out.splitlines()[-1])


@pytest.fixture
def evaluate(run_main):
    """Run `perceiver eval classify ARGS --device cpu`: (exit code, stdout, stderr)."""
    return lambda *args: run_main("eval", "classify", *args, "--device", "cpu")


@pytest.fixture
def tree(tmp_path) -> Path:
    """An ImageFolder-shaped validation folder: 2 or 3 noise images in each of four WordNet-id folders."""
    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    for n, index in enumerate(CLASSES):
        (root / WNIDS[index]).mkdir(parents=True)
        for k in range(2 + n % 2):
            pixels = rng.integers(0, 256, (24 + 8 * k, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / WNIDS[index] / f"img{k}.png")
    return root


def classify_records(capsys, checkpoint: Path, *inputs) -> list[dict]:
    capsys.readouterr()
    assert main(["classify", *map(str, inputs), "-w", str(checkpoint), "-k", "5", "--json", "--device", "cpu"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def counted(records: list[dict], truth) -> dict:
    """Top-1 and top-5 hits counted straight from classify's records."""
    top1 = sum(truth(r["input"]) == r["predictions"][0]["index"] for r in records)
    top5 = sum(truth(r["input"]) in [p["index"] for p in r["predictions"][:5]] for r in records)
    return {"1": top1, "5": top5}


def test_the_synset_list_is_imagenet_1k_in_class_order():
    names = IMAGENET_NAMES.read_text().splitlines()
    assert len(WNIDS) == 1000 == len(set(WNIDS)) and all(w.startswith("n") and len(w) == 9 for w in WNIDS)
    # anchors from WordNet: n01440764 is the tench, n01443537 the goldfish, n15075141 toilet tissue
    assert (WNIDS[0], names[0].split(",")[0]) == ("n01440764", "tench")
    assert (WNIDS[1], names[1].split(",")[0]) == ("n01443537", "goldfish")
    assert (WNIDS[999], names[999].split(",")[0]) == ("n15075141", "toilet tissue")


def test_class_folders_score_equals_a_count_over_classify_predictions(checkpoint, tree, evaluate, capsys):
    records = classify_records(capsys, checkpoint, tree)
    hits = counted(records, lambda path: WNIDS.index(Path(path).parent.name))
    code, out, err = evaluate(tree, "-w", checkpoint, "--json")
    assert code == 0, err
    summary = summary_of(out)
    assert (summary["items"], summary["failed"]) == (len(records), 0) == (10, 0)
    assert summary["correct"] == hits
    assert summary["top1"] == pytest.approx(100 * hits["1"] / 10)
    assert summary["top5"] == pytest.approx(100 * hits["5"] / 10)
    assert summary["model"] == "vision-conv" and summary["paper"]["top1"] == 82.1


def test_a_flat_folder_with_a_labels_file_scores_as_its_class_folders(checkpoint, tree, evaluate, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = []
    for image in sorted(tree.rglob("*.png")):
        name = f"{image.parent.name}_{image.name}"
        shutil.copy(image, flat / name)
        lines.append(f"{name} {WNIDS.index(image.parent.name)}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    by_folder = summary_of(evaluate(tree, "-w", checkpoint, "--json")[1])
    code, out, err = evaluate(flat, "--labels", tmp_path / "labels.txt", "-w", checkpoint, "--json")
    assert code == 0, err
    by_file = summary_of(out)
    assert by_file["correct"] == by_folder["correct"] and by_file["items"] == by_folder["items"] == 10


def test_limit_takes_one_image_of_each_class_in_turn(checkpoint, tree, evaluate, capsys):
    firsts = [tree / WNIDS[index] / "img0.png" for index in CLASSES[:3]]
    hits = counted(classify_records(capsys, checkpoint, *firsts), lambda path: WNIDS.index(Path(path).parent.name))
    code, out, err = evaluate(tree, "-w", checkpoint, "--limit", "3", "--json")
    assert code == 0, err
    summary = summary_of(out)
    assert summary["items"] == 3 and summary["correct"] == hits


def test_an_unreadable_image_is_reported_left_out_and_exits_1(checkpoint, tree, evaluate, capsys):
    broken = tree / WNIDS[3] / "broken.png"
    broken.write_bytes(b"not a picture")
    good = [p for p in sorted(tree.rglob("*.png")) if p != broken]
    hits = counted(classify_records(capsys, checkpoint, *good), lambda path: WNIDS.index(Path(path).parent.name))
    code, out, err = evaluate(tree, "-w", checkpoint, "--json")
    assert code == 1
    summary = summary_of(out)
    assert (summary["items"], summary["failed"], summary["correct"]) == (11, 1, hits)
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith(f"perceiver: error: {broken}: ")]
    assert len(err.splitlines()) == 1


def test_the_table_shows_ours_beside_the_papers(checkpoint, tree, evaluate):
    code, out, err = evaluate(tree, "-w", checkpoint)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(tree)
    top1 = next(line.split() for line in lines if line.split()[:2] == ["top-1", "%"])
    top5 = next(line.split() for line in lines if line.split()[:2] == ["top-5", "%"])
    summary = summary_of(evaluate(tree, "-w", checkpoint, "--json")[1])
    assert top1[2:] == [f"{summary['top1']:.2f}", "82.1"] and top5[2:] == [f"{summary['top5']:.2f}", "-"]
    assert any("paper: Perceiver IO" in line for line in lines)


@pytest.mark.parametrize("make,message", [
    (lambda root: (root / "sunflowers").mkdir(), "class folder not named by a WordNet id"),
    (lambda root: (root / "n99999999").mkdir(), "class folder not an ImageNet-1k WordNet id"),
])
def test_a_class_folder_that_is_no_imagenet_class_is_a_usage_error(checkpoint, tree, evaluate, make, message):
    make(tree)
    code, out, err = evaluate(tree, "-w", checkpoint)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("perceiver: error: ") and message in err


@pytest.mark.parametrize("labels,message", [
    (None, "no class folders"),
    ("a.png 3\nb.png\n", "line 2: expected 'FILENAME LABEL_INDEX'"),
    ("a.png 1000\n", "line 1: expected 'FILENAME LABEL_INDEX' with an index from 0 to 999"),
    ("a.png 1\na.png 2\n", "line 2: a.png is listed twice"),
    ("\n\n", "no 'FILENAME LABEL_INDEX' lines"),
])
def test_a_flat_folder_needs_a_well_formed_labels_file(checkpoint, evaluate, tmp_path, labels, message):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "a.png")
    args = [flat, "-w", checkpoint]
    if labels is not None:
        (tmp_path / "labels.txt").write_text(labels)
        args += ["--labels", tmp_path / "labels.txt"]
    code, out, err = evaluate(*args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and message in err


def test_json_lines_are_classifys_records_with_their_truth(checkpoint, tree, evaluate, capsys):
    records = classify_records(capsys, checkpoint, tree)
    code, out, err = evaluate(tree, "-w", checkpoint, "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()[:-1]]
    assert [{k: v for k, v in line.items() if k != "truth"} for line in lines] == records
    for line in lines:
        index = WNIDS.index(Path(line["input"]).parent.name)
        assert line["truth"] == {"label": f"class {index}", "index": index}
