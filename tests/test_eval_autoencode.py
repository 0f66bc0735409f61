"""`perceiver eval autoencode-video`: mean PSNRs over a folder of clips equal the mean of the per-clip PSNRs
autoencode-video reports, top-1/top-5 count the videos whose class folder names an action, by
autoencode-video's own predictions; the paper's figures beside ours.

The checkpoint is a tiny random multimodal one whose labels are "action 0" ... "action 9" (its config's
names), so class folders are named after those; the clips are made with PyAV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.cli import main
from synthetic_media import write_video
from tiny_models import make_tiny_checkpoint

T, SIZE, SPF = 4, 16, 1920
SHIPPED_KINETICS = Path(__file__).resolve().parents[1] / "perceiver_cli" / "data" / "kinetics700.txt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-autoencode") / "multimodal"
    make_tiny_checkpoint("multimodal", folder, seed=5, num_frames=T, output_shape=[1, T, SIZE, SIZE],
                         audio_samples_per_frame=SPF)
    return folder


def summary_of(out: str) -> dict:
    """The summary: the last line of --json output (the lines before are the items' records)."""
    return json.loads(out.splitlines()[-1])


@pytest.fixture
def evaluate(run_main):
    """Run `perceiver eval autoencode-video ARGS --device cpu`: (exit code, stdout, stderr)."""
    return lambda *args: run_main("eval", "autoencode-video", *args, "--device", "cpu")


@pytest.fixture
def clips(tmp_path) -> Path:
    """Two class folders spelt two ways, a video outside any class, and a folder that names no action."""
    root = tmp_path / "clips"
    for folder in ("action_3", "Action-5", "skateboarding on water"):
        (root / folder).mkdir(parents=True)
    write_video(root / "action_3" / "a.mp4", T + 2)
    write_video(root / "Action-5" / "b.mp4", 3, width=40, height=24)
    write_video(root / "c.mp4", T)
    write_video(root / "skateboarding on water" / "d.mp4", 2, sound=None)
    return root


def autoencode_records(capsys, checkpoint: Path, *videos) -> list[dict]:
    capsys.readouterr()
    assert main(["autoencode-video", *map(str, videos), "-w", str(checkpoint), "-k", "5", "--json",
                 "--device", "cpu"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_scores_equal_autoencode_videos_own_per_clip_psnrs_and_predictions(checkpoint, clips, evaluate, capsys):
    videos = [clips / "c.mp4", clips / "Action-5" / "b.mp4", clips / "action_3" / "a.mp4",
              clips / "skateboarding on water" / "d.mp4"]
    records = autoencode_records(capsys, checkpoint, *videos)
    per_clip = [clip for record in records for clip in record["clips"]]
    assert len(per_clip) == 1 + 1 + 2 + 1
    truth = {str(videos[1]): 5, str(videos[2]): 3}
    labelled = [r for r in records if r["input"] in truth]
    hits = {"1": sum(r["predictions"][0]["index"] == truth[r["input"]] for r in labelled),
            "5": sum(truth[r["input"]] in [p["index"] for p in r["predictions"]] for r in labelled)}
    code, out, err = evaluate(clips, "-w", checkpoint, "--json")
    assert code == 0, err
    summary = summary_of(out)
    assert (summary["items"], summary["failed"], summary["labelled"], summary["clips"]) == (4, 0, 2, 5)
    assert summary["psnr_video"] == pytest.approx(np.mean([c["psnr_video"] for c in per_clip]), rel=1e-12)
    assert summary["psnr_audio"] == pytest.approx(np.mean([c["psnr_audio"] for c in per_clip]), rel=1e-12)
    assert summary["correct"] == hits
    assert summary["top1"] == pytest.approx(100 * hits["1"] / 2)
    assert summary["top5"] == pytest.approx(100 * hits["5"] / 2)
    assert summary["paper"]["psnr_video"] == 24.37 and summary["paper"]["psnr_audio"] == 26.97
    assert summary["paper"]["top1"] == 10.2
    assert sorted(err.splitlines()) == sorted([
        "perceiver: warning: class folder 'skateboarding on water' matches no Kinetics-700 action; its videos "
        "count for PSNR only", f"perceiver: warning: {videos[3]}: no audio track; using silence"])


def test_limit_takes_one_video_of_each_class_in_turn(checkpoint, clips, evaluate, capsys):
    code, out, err = evaluate(clips, "-w", checkpoint, "--limit", "2", "--json")
    assert code == 0, err
    summary = summary_of(out)
    # classes in order of first appearance: no class (c.mp4, directly in the folder), then Action-5
    records = autoencode_records(capsys, checkpoint, clips / "c.mp4", clips / "Action-5" / "b.mp4")
    per_clip = [clip for record in records for clip in record["clips"]]
    assert (summary["items"], summary["labelled"], summary["clips"]) == (2, 1, 2)
    assert summary["psnr_video"] == pytest.approx(np.mean([c["psnr_video"] for c in per_clip]), rel=1e-12)


def test_an_unreadable_video_is_reported_left_out_and_exits_1(checkpoint, clips, evaluate):
    (clips / "action_3" / "broken.mp4").write_bytes(b"not a video")
    code, out, err = evaluate(clips, "-w", checkpoint, "--json")
    assert code == 1
    summary = summary_of(out)
    assert (summary["items"], summary["failed"], summary["labelled"]) == (5, 1, 2)
    errors = [line for line in err.splitlines() if line.startswith("perceiver: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"perceiver: error: {clips / 'action_3' / 'broken.mp4'}: ")


def test_the_table_shows_ours_beside_the_papers(checkpoint, clips, evaluate):
    code, out, err = evaluate(clips, "-w", checkpoint)
    assert code == 0, err
    rows = {" ".join(line.split()[:3]): line.split()[3:] for line in out.splitlines() if "PSNR" in line}
    summary = summary_of(evaluate(clips, "-w", checkpoint, "--json")[1])
    assert rows["video PSNR dB"] == [f"{summary['psnr_video']:.2f}", "24.37"]
    assert rows["audio PSNR dB"] == [f"{summary['psnr_audio']:.2f}", "26.97"]


def test_folder_names_match_kinetics_names_however_spelt():
    from perceiver_cli.tasks.eval_autoencode import class_key

    names = SHIPPED_KINETICS.read_text(encoding="utf-8").splitlines()
    assert len({class_key(name) for name in names}) == len(names) == 700
    keys = {class_key(name): name for name in names}
    for folder, name in (("air_drumming", "air drumming"), ("Massaging_Persons_Head", "massaging person's head"),
                         ("backflip_human", "backflip (human)")):
        assert keys[class_key(folder)] == name


@pytest.mark.parametrize("make,message", [
    (lambda root: root / "missing", "no such folder"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no video files"),
])
def test_a_dataset_without_videos_is_a_usage_error(checkpoint, evaluate, tmp_path, make, message):
    code, out, err = evaluate(make(tmp_path), "-w", checkpoint)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("perceiver: error: ") and message in err


def test_a_video_counts_as_right_when_its_folder_names_its_prediction(checkpoint, evaluate, capsys, tmp_path):
    made = [write_video(tmp_path / "a.mp4", T), write_video(tmp_path / "b.mp4", T + 1, width=24, height=40)]
    records = autoencode_records(capsys, checkpoint, *made)
    best = records[0]["predictions"][0]["label"]
    second = records[1]["predictions"][1]["label"]  # in b's top 5, not its top 1
    for video, label in zip(made, (best, second)):
        (tmp_path / "set" / label.replace(" ", "_")).mkdir(parents=True)
        video.rename(tmp_path / "set" / label.replace(" ", "_") / video.name)
    code, out, err = evaluate(tmp_path / "set", "-w", checkpoint, "--json")
    assert code == 0, err
    summary = summary_of(out)
    assert summary["correct"] == {"1": 1, "5": 2} and (summary["top1"], summary["top5"]) == (50.0, 100.0)


def test_json_lines_are_autoencode_videos_records_with_their_truth(checkpoint, clips, evaluate, capsys):
    videos = [clips / "c.mp4", clips / "Action-5" / "b.mp4", clips / "action_3" / "a.mp4",
              clips / "skateboarding on water" / "d.mp4"]  # the dataset's order: loose videos, then folders
    records = autoencode_records(capsys, checkpoint, *videos)
    code, out, err = evaluate(clips, "-w", checkpoint, "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()[:-1]]
    assert [{k: v for k, v in line.items() if k != "truth"} for line in lines] == records
    assert [line["truth"] for line in lines] == [None, {"label": "action 5", "index": 5},
                                                 {"label": "action 3", "index": 3}, None]
