"""`perceiver eval flow` on Sintel-shaped and KITTI-shaped trees built here: its per-pair EPEs are the ones
`perceiver flow --gt` reports, and its figures are their means (Fl-all re-counted here from the flow).

The Sintel tree is cut from the shared alley_1 frames and ground truth (small crops, so the tiny checkpoint's
8x12 windows stay few); KITTI ground truth is written with io.flowfiles.write_kitti_png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.io.flo import read_flo, write_flo
from perceiver_cli.io.flowfiles import write_kitti_png
from tiny_models import make_tiny_checkpoint

ALLEY = Path(__file__).resolve().parents[2] / "shared" / "data" / "flow" / "sintel_alley_1"
H, W = 12, 18


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-flow") / "flow"
    make_tiny_checkpoint("flow", folder, seed=21)
    return folder


def records_of(capsys, *args) -> tuple[int, list[dict], str]:
    capsys.readouterr()
    code = main([*map(str, args), "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def crop(array: np.ndarray, y: int, x: int) -> np.ndarray:
    return np.ascontiguousarray(array[y:y + H, x:x + W])


@pytest.fixture(scope="module")
def sintel(tmp_path_factory) -> Path:
    """training/{clean,final}/SCENE/frame_%04d.png, flow/, occlusions/, invalid/: two scenes, three pairs."""
    if not ALLEY.is_dir():
        pytest.skip(f"needs the shared data beside the checkout: {ALLEY}")
    frame2 = np.asarray(Image.open(ALLEY / "frame_0002.png").convert("RGB"))
    frame3 = np.asarray(Image.open(ALLEY / "frame_0003.png").convert("RGB"))
    truth = read_flo(ALLEY / "frame_0002_gt.flo")
    training = tmp_path_factory.mktemp("sintel") / "MPI-Sintel" / "training"
    rng = np.random.default_rng(8)
    scenes = {"alley_1": [(200, 300), (200, 300), (203, 305)], "alley_2": [(100, 600), (100, 600)]}
    for scene, corners in scenes.items():
        for number, (y, x) in enumerate(corners, start=1):
            source = frame2 if number == 1 else frame3
            for sintel_pass in ("clean", "final"):
                folder = training / sintel_pass / scene
                folder.mkdir(parents=True, exist_ok=True)
                picture = crop(source, y, x) if sintel_pass == "clean" else 255 - crop(source, y, x)
                Image.fromarray(picture).save(folder / f"frame_{number:04d}.png")
            if number == len(corners):
                continue
            for kind in ("flow", "occlusions", "invalid"):
                (training / kind / scene).mkdir(parents=True, exist_ok=True)
            field = crop(truth, y, x).copy()
            field[0, 0] = [1e10, 0]  # unknown: never counted
            write_flo(training / "flow" / scene / f"frame_{number:04d}.flo", field)
            occluded = (rng.random((H, W)) < 0.3).astype(np.uint8) * 255
            Image.fromarray(occluded).save(training / "occlusions" / scene / f"frame_{number:04d}.png")
            invalid = np.zeros((H, W), np.uint8)
            invalid[:, :number] = 255  # a few excluded columns
            Image.fromarray(invalid).save(training / "invalid" / scene / f"frame_{number:04d}.png")
    return training.parent


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    """training/image_2/%06d_10.png and _11.png, flow_occ/ and flow_noc/ as 16-bit KITTI PNGs: three scenes."""
    training = tmp_path_factory.mktemp("kitti") / "data_scene_flow" / "training"
    for folder in ("image_2", "flow_occ", "flow_noc"):
        (training / folder).mkdir(parents=True)
    rng = np.random.default_rng(9)
    for scene in range(3):
        base = rng.integers(0, 256, (H, W + 4, 3), dtype=np.uint8)
        Image.fromarray(np.ascontiguousarray(base[:, :W])).save(training / "image_2" / f"{scene:06d}_10.png")
        Image.fromarray(np.ascontiguousarray(base[:, 2 + scene % 2:W + 2 + scene % 2])).save(
            training / "image_2" / f"{scene:06d}_11.png")
        field = np.round(rng.normal(0, 4, (H, W, 2)) * 64) / 64
        valid = rng.random((H, W)) < 0.6  # sparse, like KITTI's lidar ground truth
        write_kitti_png(training / "flow_occ" / f"{scene:06d}_10.png", field, valid)
        write_kitti_png(training / "flow_noc" / f"{scene:06d}_10.png", field, valid & (rng.random((H, W)) < 0.8))
    return training.parent


def test_sintel_eval_equals_the_mean_of_the_per_pair_epes_flow_reports(sintel, weights, capsys):
    training = sintel / "training"
    code, records, err = records_of(capsys, "eval", "flow", sintel, "-w", weights)
    assert code == 0, err
    *pairs, summary = records
    assert [(Path(r["input"]).parent.name, Path(r["input"]).name) for r in pairs] == [
        ("alley_1", "frame_0001.png"), ("alley_1", "frame_0002.png"), ("alley_2", "frame_0001.png")]
    code, flow_records, err = records_of(capsys, "flow", training / "clean", "--recursive", "--gt",
                                         training / "flow", "-w", weights)
    assert code == 0, err
    assert [r["input"] for r in flow_records] == [r["input"] for r in pairs]
    flow_epes = [r["epe"] for r in flow_records]
    assert [r["epe"] for r in pairs] == flow_epes and all(e is not None for e in flow_epes)
    assert summary["epe"] == pytest.approx(np.mean(flow_epes), rel=1e-12)
    assert summary["scenes"] == pytest.approx({"alley_1": np.mean(flow_epes[:2]), "alley_2": flow_epes[2]})
    assert summary["epe_matched"] == pytest.approx(np.mean([r["epe_matched"] for r in pairs]))
    assert summary["epe_unmatched"] == pytest.approx(np.mean([r["epe_unmatched"] for r in pairs]))
    assert (summary["dataset"], summary["pass"], summary["pairs"], summary["failed"]) == ("sintel", "clean", 3, 0)
    assert summary["paper"]["epe"] == 1.81 and "Table 3" in summary["paper"]["source"]


def test_sintel_matched_and_unmatched_split_the_valid_pixels_by_the_occlusion_mask(sintel, weights, capsys,
                                                                                     tmp_path):
    training = sintel / "training"
    first = training / "final" / "alley_2" / "frame_0001.png"
    second = training / "final" / "alley_2" / "frame_0002.png"
    code, _, err = records_of(capsys, "flow", first, second, "-w", weights, "-o", tmp_path / "f.npy")
    assert code == 0, err
    flow = np.load(tmp_path / "f.npy").astype(np.float64)
    truth = read_flo(training / "flow" / "alley_2" / "frame_0001.flo").astype(np.float64)
    valid = (np.abs(truth) <= 1e9).all(axis=2)
    valid &= np.asarray(Image.open(training / "invalid" / "alley_2" / "frame_0001.png")) == 0
    occluded = np.asarray(Image.open(training / "occlusions" / "alley_2" / "frame_0001.png")) > 0
    error = np.sqrt(((flow - truth) ** 2).sum(axis=2))
    code, records, err = records_of(capsys, "eval", "flow", training, "-w", weights, "--pass", "final")
    assert code == 0, err
    (pair,) = [r for r in records[:-1] if r["scene"] == "alley_2"]
    assert pair["epe"] == pytest.approx(error[valid].mean(), rel=1e-5)
    assert pair["epe_matched"] == pytest.approx(error[valid & ~occluded].mean(), rel=1e-5)
    assert pair["epe_unmatched"] == pytest.approx(error[valid & occluded].mean(), rel=1e-5)
    assert records[-1]["pass"] == "final" and records[-1]["paper"]["epe"] == 2.42


def test_kitti_eval_gives_epe_and_fl_all_over_the_valid_pixels(kitti, weights, capsys, tmp_path):
    from perceiver_cli.io.flowfiles import read_kitti_png

    training = kitti / "training"
    code, records, err = records_of(capsys, "eval", "flow", training, "-w", weights)
    assert code == 0, err
    *pairs, summary = records
    epes, outliers, counted = [], 0, 0
    for scene, pair in enumerate(pairs):
        first, second = (training / "image_2" / f"{scene:06d}_{n}.png" for n in (10, 11))
        gt = training / "flow_occ" / f"{scene:06d}_10.png"
        code, (record,), err = records_of(capsys, "flow", first, second, "--gt", gt, "-w", weights,
                                          "-o", tmp_path / f"{scene}.npy")
        assert code == 0, err
        assert pair["epe"] == record["epe"] and pair["input"] == str(first)
        epes.append(record["epe"])
        truth, valid = read_kitti_png(gt)
        error = np.sqrt(((np.load(tmp_path / f"{scene}.npy") - truth).astype(np.float64) ** 2).sum(axis=2))[valid]
        magnitude = np.sqrt((truth.astype(np.float64) ** 2).sum(axis=2))[valid]
        outliers += int(((error > 3) & (error > 0.05 * magnitude)).sum())
        counted += int(valid.sum())
        noc_truth, noc_valid = read_kitti_png(training / "flow_noc" / f"{scene:06d}_10.png")
        noc_error = np.sqrt(((np.load(tmp_path / f"{scene}.npy") - noc_truth).astype(np.float64) ** 2).sum(axis=2))
        assert pair["epe_noc"] == pytest.approx(noc_error[noc_valid].mean(), rel=1e-5)
        assert noc_valid.sum() < valid.sum()
    assert summary["epe"] == pytest.approx(np.mean(epes), rel=1e-12)
    assert summary["fl_all"] == pytest.approx(100 * outliers / counted, rel=1e-9)
    assert summary["epe_noc"] == pytest.approx(np.mean([p["epe_noc"] for p in pairs]), rel=1e-12)
    assert (summary["dataset"], summary["pass"], summary["paper"]["epe"]) == ("kitti", None, 4.98)


def test_limit_scores_the_first_pairs_and_the_table_labels_the_papers_figure(sintel, weights, capsys):
    capsys.readouterr()
    assert main(["eval", "flow", str(sintel), "-w", str(weights), "--limit", "2", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "Sintel training, clean pass: 2 pairs scored (of 3)"
    assert lines[1].split() == ["ours", "paper"] and lines[2].split()[:2] == ["EPE", "(px)"]
    assert lines[2].split()[-1] == "1.810"
    assert any(line.strip().startswith("paper: Perceiver IO") for line in lines)
    code, records, _ = records_of(capsys, "eval", "flow", sintel, "-w", weights, "--limit", "1")
    assert len(records) == 2 and records[-1]["pairs"] == 1 and records[-1]["available"] == 3


def test_a_folder_that_is_no_dataset_is_a_usage_error(tmp_path, capsys):
    assert main(["eval", "flow", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perceiver: error: ") and "neither a Sintel" in err and err.count("\n") == 1



def test_a_batch_size_below_one_is_refused_naming_the_option(sintel, run_main):
    # eval flow once answered "batch size must be ..." where the other commands name --batch-size
    code, out, err = run_main("eval", "flow", sintel, "--batch-size", "0", "--device", "cpu")
    assert code == 2 and out == ""
    assert err == "perceiver: error: --batch-size must be at least 1, got 0\n", err


def test_pairs_without_ground_truth_are_skipped_with_one_warning_and_counted_apart(sintel, weights, capsys,
                                                                                  tmp_path):
    import shutil

    root = tmp_path / "MPI-Sintel"
    shutil.copytree(sintel, root)
    flow = root / "training" / "flow"
    (flow / "alley_1" / "frame_0001.flo").unlink()  # a partial copy: this pair cannot be scored
    write_flo(flow / "alley_2" / "frame_0001.flo", np.zeros((4, 4, 2), np.float32))  # mis-sized: ran, no score
    code, records, err = records_of(capsys, "eval", "flow", root, "-w", weights)
    assert code == 0
    *pairs, summary = records
    assert [Path(r["input"]).parent.name + "/" + Path(r["input"]).name for r in pairs] == [
        "alley_1/frame_0002.png", "alley_2/frame_0001.png"]  # the pair without truth never ran
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("perceiver: warning: skipped 1 pair(s) without")
    assert (summary["pairs"], summary["unscored"], summary["failed"], summary["skipped"], summary["available"]) == (
        1, 1, 0, 1, 2)
    assert summary["epe"] == pytest.approx(pairs[0]["epe"])
    capsys.readouterr()
    assert main(["eval", "flow", str(root), "-w", str(weights), "--limit", "1", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "Sintel training, clean pass: 1 pairs scored (of 2), 1 skipped without ground truth"
    code, records, _ = records_of(capsys, "eval", "flow", root, "-w", weights, "--limit", "1")
    assert len(records) == 2 and (records[-1]["pairs"], records[-1]["available"]) == (1, 2)
