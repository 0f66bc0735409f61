"""--report FILE.html and the flow error maps.

The pages are read back with html.parser: every number on a page carries its exact value (`data-value`) and
what it is (`data-key`), and each is held to the JSON lines and the JSON summary of the same run. The worst
items' cards are the N largest per-item figures; an interrupted run leaves a page marked partial; a report
path that cannot be written stops the command before any work; a page references nothing outside itself
and stays small however many items the run has. The last test opens every page in headless Chromium.

Checkpoints are tests/tiny_models.py's tiny random ones; the Sintel-shaped tree is cut from the shared
alley_1 frames and ground truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.io.flo import read_flo, write_flo
from synthetic_media import write_video
from tiny_models import make_tiny_checkpoint

ALLEY = Path(__file__).resolve().parents[2] / "shared" / "data" / "flow" / "sintel_alley_1"
SYNSETS = Path(__file__).resolve().parents[1] / "perceiver_cli" / "data" / "imagenet_synsets.txt"
H, W = 12, 18
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "poster", "data", "xlink:href", "formaction", "background"}


# -- reading a page back ---------------------------------------------------------------------------------------

class Page(HTMLParser):
    """What a report page holds: its numbers (key, exact value, card), pictures, attributes, texts, tables."""

    def __init__(self, text: str):
        super().__init__()
        self.numbers: list[tuple[str, str, int | None]] = []
        self.images: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.texts: list[str] = []
        self.partial = None
        self.cards = 0
        self._card = None
        self._depth = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attributes.extend((tag, name, value or "") for name, value in attrs.items())
        if tag == "body":
            self.partial = attrs.get("data-partial")
        if tag == "article" and "card" in (attrs.get("class") or ""):
            self._card, self.cards = self.cards, self.cards + 1
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if "data-key" in attrs:
            self.numbers.append((attrs["data-key"], attrs.get("data-value", ""), self._card))

    def handle_endtag(self, tag):
        if tag == "article":
            self._card = None

    def handle_data(self, data):
        self.texts.append(data)

    def card_values(self, key: str) -> list[float]:
        return [float(value) for k, value, card in self.numbers if card is not None and k == key]


def value_of(text: str):
    return None if text == "" else float(text)


def summary_at(summary: dict, path: str):
    value = summary
    for part in path.split("."):
        value = value[part]
    return value


def group_mean(records: list[dict], field: str, group, name: str):
    values = [r[field] for r in records if group(r) == name and r.get(field) is not None]
    return sum(values) / len(values) if values else None


def check_numbers(page: Page, summary: dict, records: list[dict], group_of: dict) -> int:
    """Every number outside the cards equals the summary's (by path) or its group's mean of the records' field;
    returns how many were checked."""
    checked = 0
    for key, text, card in page.numbers:
        if card is not None:
            continue
        if key.startswith("mean:"):
            _, group, field = key.split(":")
            kind, name = group.split("=", 1)
            expected = group_mean(records, field, group_of[kind], name)
            assert (value_of(text) is None) == (expected is None), key
            if expected is not None:
                assert value_of(text) == pytest.approx(expected, rel=1e-12), key
        else:
            assert value_of(text) == summary_at(summary, key), key
        checked += 1
    return checked


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


# -- data and runs shared by the tests -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flow_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report-flow") / "flow"
    make_tiny_checkpoint("flow", folder, seed=21)
    return folder


def crop(array: np.ndarray, y: int, x: int) -> np.ndarray:
    return np.ascontiguousarray(array[y:y + H, x:x + W])


@pytest.fixture(scope="module")
def sintel(tmp_path_factory) -> Path:
    """A Sintel training tree: three scenes, five pairs, occlusion masks, ground truth of several speeds."""
    if not ALLEY.is_dir():
        pytest.skip("the shared Sintel alley_1 sample is not here")
    frames = [np.asarray(Image.open(ALLEY / f"frame_000{n}.png").convert("RGB")) for n in (2, 3)]
    truth = read_flo(ALLEY / "frame_0002_gt.flo")
    training = tmp_path_factory.mktemp("sintel") / "training"
    rng = np.random.default_rng(3)
    scenes = {"alley_1": [(200, 300)] * 3, "bamboo_2": [(100, 600)] * 3, "cave_4": [(50, 100)] * 2}
    for number_of_scene, (scene, corners) in enumerate(scenes.items()):
        for number, (y, x) in enumerate(corners, start=1):
            folder = training / "clean" / scene
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop(frames[number > 1], y, x)).save(folder / f"frame_{number:04d}.png")
            if number == len(corners):
                continue
            for kind in ("flow", "occlusions"):
                (training / kind / scene).mkdir(parents=True, exist_ok=True)
            field = crop(truth, y, x) * (1 + 6 * number_of_scene)  # faster motion scene by scene
            write_flo(training / "flow" / scene / f"frame_{number:04d}.flo", field)
            occluded = (rng.random((H, W)) < 0.3).astype(np.uint8) * 255
            Image.fromarray(occluded).save(training / "occlusions" / scene / f"frame_{number:04d}.png")
    return training


@pytest.fixture(scope="module")
def flow_run(flow_weights, sintel, tmp_path_factory):
    """eval flow --json --report (worst 3 of 5 pairs): (page text, records, summary, page path)."""
    report = tmp_path_factory.mktemp("flow-report") / "sintel.html"
    code, out, err = run_cli("eval", "flow", sintel, "-w", flow_weights, "--device", "cpu", "--json",
                             "--report", report, "--report-worst", 3)
    assert code == 0, err
    *records, summary = json_lines(out)
    return report.read_text(encoding="utf-8"), records, summary, report


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    """eval classify --json --report over four WordNet-id folders of noise images (worst 4 of 10)."""
    root = tmp_path_factory.mktemp("classify")
    weights = root / "vision-conv"
    make_tiny_checkpoint("vision-conv", weights, seed=3)
    wnids = SYNSETS.read_text().split()
    rng = np.random.default_rng(0)
    for n, index in enumerate((0, 3, 7, 9)):
        (root / "val" / wnids[index]).mkdir(parents=True)
        for k in range(2 + n % 2):
            pixels = rng.integers(0, 256, (24 + 8 * k, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "val" / wnids[index] / f"img{k}.png")
    code, out, err = run_cli("eval", "classify", root / "val", "-w", weights, "--device", "cpu", "--json",
                             "--report", root / "classify.html", "--report-worst", 4)
    assert code == 0, err
    *records, summary = json_lines(out)
    return (root / "classify.html").read_text(encoding="utf-8"), records, summary, root / "classify.html"


@pytest.fixture(scope="module")
def autoencode_run(tmp_path_factory):
    """eval autoencode-video --json --report over three clips (worst 2)."""
    root = tmp_path_factory.mktemp("autoencode")
    weights = root / "multimodal"
    make_tiny_checkpoint("multimodal", weights, seed=5, num_frames=4, output_shape=[1, 4, 16, 16],
                         audio_samples_per_frame=1920)
    for folder in ("action_3", "action_5"):
        (root / "clips" / folder).mkdir(parents=True)
    write_video(root / "clips" / "action_3" / "a.mp4", 6)
    write_video(root / "clips" / "action_5" / "b.mp4", 3, width=40, height=24)
    write_video(root / "clips" / "c.mp4", 4)
    code, out, err = run_cli("eval", "autoencode-video", root / "clips", "-w", weights, "--device", "cpu", "--json",
                             "--report", root / "autoencode.html", "--report-worst", 2)
    assert code == 0, err
    *records, summary = json_lines(out)
    return (root / "autoencode.html").read_text(encoding="utf-8"), records, summary, root / "autoencode.html"


# -- the numbers ------------------------------------------------------------------------------------------------

def test_eval_flow_page_holds_the_json_figures_and_the_worst_pairs(flow_run):
    text, records, summary, _ = flow_run
    page = Page(text)
    assert page.partial == "false"
    assert check_numbers(page, summary, records, {"scene": lambda r: r["scene"]}) >= 9 + 3 * 6
    keys = {key for key, _, card in page.numbers if card is None}
    assert {"epe", "paper.epe", "epe_matched", "epe_s0_10", "scenes.alley_1", "mean:scene=cave_4:epe_unmatched"} <= keys
    # Each scene's true motion lies in one speed band (about 1.4, 69 and 20 px): that band's EPE is the pair's.
    band_of = {"alley_1": "epe_s0_10", "bamboo_2": "epe_s40plus", "cave_4": "epe_s10_40"}
    for record in records:
        for band in band_of.values():
            assert record[band] == (record["epe"] if band == band_of[record["scene"]] else None), band
    for band in band_of.values():
        values = [r[band] for r in records if r[band] is not None]
        assert summary[band] == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert page.cards == 3
    assert page.card_values("badness") == sorted((r["epe"] for r in records), reverse=True)[:3]
    assert len(page.images) == 3 * 4  # first frame, our flow, the ground truth, the error map


def test_eval_classify_page_holds_the_json_figures_and_the_worst_images(classify_run):
    text, records, summary, _ = classify_run
    page = Page(text)
    assert check_numbers_classify(page, summary, records) >= 4 + 4 * 2
    badness = [1.0 - next((p["score"] for p in r["predictions"] if p["index"] == r["truth"]["index"]), 0.0)
               for r in records]
    assert page.cards == 4 and len(page.images) == 4
    assert page.card_values("badness") == sorted(badness, reverse=True)[:4]


def check_numbers_classify(page: Page, summary: dict, records: list[dict]) -> int:
    """Headline numbers equal the summary's; a class's top-1/top-5 % are its records' shares."""
    checked = 0
    for key, text, card in page.numbers:
        if card is not None:
            continue
        if key.startswith("share:"):
            _, group, k = key.split(":")
            members = [r for r in records if r["truth"]["label"] == group.split("=", 1)[1]]
            depth = 1 if k == "top1" else 5
            hits = sum(r["truth"]["index"] in [p["index"] for p in r["predictions"][:depth]] for r in members)
            assert float(text) == pytest.approx(100.0 * hits / len(members), rel=1e-12), key
        else:
            assert value_of(text) == summary_at(summary, key), key
        checked += 1
    return checked


def test_eval_autoencode_page_holds_the_json_figures_and_the_worst_videos(autoencode_run):
    text, records, summary, _ = autoencode_run
    page = Page(text)
    classes = {"class": lambda r: r["truth"]["label"] if r["truth"] else "(no class)"}
    assert check_numbers(page, summary, records, classes) >= 11 + 3 * 2
    assert {"psnr_video", "paper.psnr_video", "top5", "clips", "mean:class=action 3:psnr_audio",
            "mean:class=(no class):psnr_video"} <= {key for key, _, _ in page.numbers}
    assert page.cards == 2 and len(page.images) == 2 * 3  # the frames, both waveforms
    assert page.card_values("item:psnr_video") == sorted(r["psnr_video"] for r in records)[:2]


def test_eval_flow_kitti_page_holds_fl_all_and_the_histograms(flow_weights, tmp_path):
    from perceiver_cli.io.flowfiles import write_kitti_png

    training = tmp_path / "kitti" / "training"
    for folder in ("image_2", "flow_occ", "flow_noc"):
        (training / folder).mkdir(parents=True)
    rng = np.random.default_rng(9)
    for scene in range(3):
        base = rng.integers(0, 256, (H, W + 4, 3), dtype=np.uint8)
        Image.fromarray(np.ascontiguousarray(base[:, :W])).save(training / "image_2" / f"{scene:06d}_10.png")
        Image.fromarray(np.ascontiguousarray(base[:, 2:W + 2])).save(training / "image_2" / f"{scene:06d}_11.png")
        field = np.round(rng.normal(0, 4, (H, W, 2)) * 64) / 64
        valid = rng.random((H, W)) < 0.6
        write_kitti_png(training / "flow_occ" / f"{scene:06d}_10.png", field, valid)
        write_kitti_png(training / "flow_noc" / f"{scene:06d}_10.png", field, valid & (rng.random((H, W)) < 0.8))
    code, out, err = run_cli("eval", "flow", tmp_path / "kitti", "-w", flow_weights, "--device", "cpu", "--json",
                             "--report", tmp_path / "kitti.html")
    assert code == 0, err
    *records, summary = json_lines(out)
    text = (tmp_path / "kitti.html").read_text(encoding="utf-8")
    page = Page(text)
    assert check_numbers(page, summary, records, {}) >= 6
    assert {"fl_all", "epe_noc", "paper.epe"} <= {key for key, _, card in page.numbers if card is None}
    assert page.card_values("item:fl_all") == [r["fl_all"] for r in sorted(records, key=lambda r: -r["epe"])]
    assert "EPE per pair: pairs per bin" in page.texts and "Fl-all per pair: pairs per bin" in page.texts


def test_flow_gt_report_and_error_maps_of_the_pairs_with_ground_truth(flow_weights, sintel, tmp_path):
    from perceiver_cli.io.flowviz import end_point_errors, epe_to_color

    truth = tmp_path / "truth"
    truth.mkdir()
    shutil.copy(sintel / "flow" / "alley_1" / "frame_0001.flo", truth)  # the second pair has none
    out = tmp_path / "out"
    code, stdout, err = run_cli("flow", sintel / "clean" / "alley_1", "--gt", truth, "-o", out, "--format",
                                "flo,epe", "--max-epe", 2, "-w", flow_weights, "--device", "cpu", "--json",
                                "--report", tmp_path / "pairs.html")
    assert code == 0, err
    first, second = json_lines(stdout)
    assert second["epe"] is None and "frame_0002.flo: no ground truth" in err
    assert sorted(p.name for p in out.iterdir()) == ["frame_0001.flo", "frame_0001_epe.png", "frame_0002.flo"]
    assert str(out / "frame_0001_epe.png") in first["outputs"]
    errors = end_point_errors(read_flo(out / "frame_0001.flo"), read_flo(truth / "frame_0001.flo"))
    written = np.asarray(Image.open(out / "frame_0001_epe.png").convert("RGB"))
    assert np.array_equal(written, epe_to_color(errors, 2.0))
    page = Page((tmp_path / "pairs.html").read_text(encoding="utf-8"))
    headline = {key: value_of(text) for key, text, card in page.numbers if card is None}
    assert headline["epe"] == first["epe"] and headline["pairs"] == 1
    assert page.card_values("badness") == [first["epe"]]


# -- interrupted runs, bad report paths ------------------------------------------------------------------------

def test_an_interrupted_eval_writes_a_partial_report_of_the_pairs_done(flow_weights, sintel, tmp_path, monkeypatch):
    from perceiver_cli.core import flow as core_flow

    real_stream = core_flow.FlowEstimator.stream

    def interrupted(self, pairs, on_windows=None):
        for number, item in enumerate(real_stream(self, pairs, on_windows)):
            if number == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(core_flow.FlowEstimator, "stream", interrupted)
    report = tmp_path / "partial.html"
    code, out, err = run_cli("eval", "flow", sintel, "-w", flow_weights, "--device", "cpu", "--json",
                             "--report", report)
    assert code == 130, err
    done = json_lines(out)
    assert len(done) == 2
    page = Page(report.read_text(encoding="utf-8"))
    assert page.partial == "true" and any("Partial report" in t for t in page.texts)
    headline = {key: value_of(text) for key, text, card in page.numbers if card is None}
    assert headline["pairs"] == 2
    assert headline["epe"] == pytest.approx(sum(r["epe"] for r in done) / 2, rel=1e-12)
    assert [p.name for p in tmp_path.iterdir()] == ["partial.html"]  # no temporary file left


@pytest.mark.parametrize("name", ["a-file/report.html", "report.txt", "folder"])
def test_a_report_path_that_cannot_be_written_is_a_usage_error_before_any_work(flow_weights, sintel, tmp_path,
                                                                             monkeypatch, name):
    import perceiver_cli.load as load

    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "folder").mkdir()
    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    code, out, err = run_cli("eval", "flow", sintel, "-w", flow_weights, "--device", "cpu", "--report",
                             tmp_path / name)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("perceiver: error:")
    assert (tmp_path / "a-file").read_text() == "mine"


@pytest.mark.parametrize("worst", [-1, 1001])
def test_a_report_worst_count_out_of_bounds_is_a_usage_error_before_any_work(flow_weights, sintel, tmp_path,
                                                                           monkeypatch, worst):
    import perceiver_cli.load as load

    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    code, out, err = run_cli("eval", "flow", sintel, "-w", flow_weights, "--device", "cpu", "--report",
                             tmp_path / "r.html", "--report-worst", worst)
    assert code == 2 and out == "" and "--report-worst must be" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_report_and_error_map_options_refuse_what_cannot_work(flow_weights, sintel, tmp_path):
    frames = sintel / "clean" / "alley_1"
    for args, message in [(["--report", tmp_path / "r.html"], "--report shows the scores against ground truth"),
                          (["-o", tmp_path / "o", "--format", "flo,epe"], "give --gt"),
                          (["--gt", sintel / "flow" / "alley_1", "-o", tmp_path / "o", "--max-epe", 3],
                           "sets the scale of error maps"),
                          (["--gt", sintel / "flow" / "alley_1", "-o", tmp_path / "o", "--format", "epe",
                            "--max-epe", 0], "--max-epe must be a positive")]:
        code, _, err = run_cli("flow", frames, "-w", flow_weights, "--device", "cpu", *args)
        assert code == 2 and message in err, err


# -- the page itself -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("run", ["flow_run", "classify_run", "autoencode_run"])
def test_a_page_references_nothing_outside_itself(run, request):
    text = request.getfixturevalue(run)[0]
    page = Page(text)
    for tag, name, value in page.attributes:
        if name in URL_ATTRIBUTES:
            assert value.startswith("data:image/png;base64,"), (tag, name, value[:40])
        else:
            assert "http:" not in value and "https:" not in value and "//" not in value, (tag, name, value)
    for chunk in page.texts:  # text, inline script and style alike
        for needle in ("http:", "https:", "//", "url(", "@import"):
            assert needle not in chunk, chunk[:80]
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)


def test_the_page_keeps_only_the_worst_pictures_of_a_large_run(tmp_path):
    """Three thousand scored pairs: the page has the twelve worst, drawn, and stays well under 2 MB."""
    from perceiver_cli.tasks.base import Item, Result
    from perceiver_cli.tasks.report_html import HtmlReport
    from perceiver_cli.tasks.report_pages import KINDS, flow_summary

    rng = np.random.default_rng(1)
    report = HtmlReport(tmp_path / "big.html", 12, KINDS["flow"], task=object())
    epes = rng.random(3000) * 10
    for index, epe in enumerate(epes):
        truth = rng.normal(0, 5, (48, 64, 2)).astype(np.float32)
        result = Result(Item(index, f"seq{index % 40}/frame_{index:05d}.png"),
                        {"input": f"seq{index % 40}/frame_{index:05d}.png", "input2": "next", "epe": float(epe)})
        result.visuals = {"estimate": truth + np.float32(epe), "truth": truth, "valid": np.ones((48, 64), bool)}
        report.listen(result)
    report.write(flow_summary(report.records))
    page = Page((tmp_path / "big.html").read_text(encoding="utf-8"))
    assert (tmp_path / "big.html").stat().st_size < 2_000_000
    assert page.cards == 12 and len(page.images) == 12 * 3
    assert page.card_values("badness") == sorted(epes.tolist(), reverse=True)[:12]


# -- error maps -------------------------------------------------------------------------------------------------

def test_error_map_colours_scale_and_unknown_pixels():
    import cv2

    from perceiver_cli.io.flowviz import SCALE_BAR_HEIGHT, end_point_errors, epe_to_color

    flow = np.zeros((4, 6, 2), np.float32)
    truth = np.zeros_like(flow)
    truth[0, :3] = [3.0, 4.0]  # 5 px off
    truth[1, 0] = [1e10, 0.0]  # unknown
    errors = end_point_errors(flow, truth)
    assert errors[0, 0] == 5.0 and errors[2, 2] == 0.0 and np.isnan(errors[1, 0])
    ramp = cv2.cvtColor(cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    bare = epe_to_color(errors, max_epe=2.5, scale_bar=False)
    assert bare.shape == (4, 6, 3)
    assert (bare[0, 0] == ramp[0, 1]).all() and (bare[2, 2] == ramp[0, 0]).all()  # 5 px is past the 2.5 px top
    assert (bare[1, 0] == [128, 128, 128]).all()
    with_bar = epe_to_color(errors, max_epe=2.5)
    factor = with_bar.shape[1] // 6
    assert factor * 6 >= 160 and with_bar.shape[0] == 4 * factor + SCALE_BAR_HEIGHT
    assert np.array_equal(with_bar[:4 * factor:factor, ::factor], bare)
    assert (with_bar[4 * factor + 2, 0] == ramp[0, 0]).all() and (with_bar[4 * factor + 2, -1] == ramp[0, 1]).all()


def test_draw_flow_against_draws_the_error_map_and_scores_it(tmp_path):
    from perceiver_cli.io.flowviz import end_point_errors, epe_to_color
    from perceiver_cli.metrics import end_point_error

    rng = np.random.default_rng(4)
    truth = rng.normal(0, 3, (10, 14, 2)).astype(np.float32)
    ours = truth + rng.normal(0, 1, truth.shape).astype(np.float32)
    truth[0, 0] = [1e10, 0]
    write_flo(tmp_path / "truth.flo", truth)
    write_flo(tmp_path / "ours.flo", ours)
    code, out, err = run_cli("draw-flow", tmp_path / "ours.flo", "--against", tmp_path / "truth.flo", "-o",
                             tmp_path / "error.png", "--max-epe", 4, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["epe"] == pytest.approx(end_point_error(ours, truth), rel=1e-12)
    written = np.asarray(Image.open(tmp_path / "error.png").convert("RGB"))
    assert np.array_equal(written, epe_to_color(end_point_errors(ours, truth), 4.0))
    write_flo(tmp_path / "small.flo", truth[:5])
    code, out, err = run_cli("draw-flow", tmp_path / "ours.flo", "--against", tmp_path / "small.flo", "-o",
                             tmp_path / "e2.png")
    assert code == 1 and "same size" in err and not (tmp_path / "e2.png").exists()
    from perceiver_cli.io.flowfiles import write_kitti_png

    write_kitti_png(tmp_path / "kitti.png", ours)
    code, _, err = run_cli("draw-flow", tmp_path / "ours.flo", "--against", tmp_path / "kitti.png", "-o",
                           tmp_path / "kitti.png")
    assert code == 2 and "same file" in err  # the flow it is drawn against is never overwritten


# -- in a browser ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("run", ["flow_run", "classify_run", "autoencode_run"])
def test_the_page_in_headless_chromium(run, request, tmp_path):
    """Loads with no console error and no request but the file; every picture decodes; the screenshot is not
    blank; clicking a sortable table's heading reorders its rows by that column, then reverses them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    path = request.getfixturevalue(run)[3]
    url = path.resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            problems, requests = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            assert problems == []
            assert [u for u in requests if u != url and not u.startswith("data:")] == []
            decoded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            assert decoded and all(decoded)
            shot = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"), float)
            assert shot.std() > 10 and (shot < 128).mean() > 0.01
            check_sorting(page)
        finally:
            browser.close()


def check_sorting(page) -> None:
    """Click the heading of the breakdown table's column with the most distinct numbers: its rows come
    in ascending order of that column, then, clicked again, in descending order."""
    column = page.evaluate("""() => {
        const rows = Array.from(document.querySelectorAll('table.sortable')[1].tBodies[0].rows);
        const distinct = [...rows[0].cells].map((_, c) => new Set(rows.map(r => r.cells[c].getAttribute('data-value'))
            .filter(v => v !== null && v !== '')).size);
        return distinct.indexOf(Math.max(...distinct)); }""")
    values = f"Array.from(document.querySelectorAll('table.sortable')[1].tBodies[0].rows).map(r => r.cells[{column}]" \
             ".getAttribute('data-value'))"
    before = page.evaluate(values)
    assert len({v for v in before if v}) >= 2, "no column to sort by"
    heading = page.locator("table.sortable").nth(1).locator("thead th").nth(column)
    heading.click()
    ascending = page.evaluate(values)
    numbers = [-math.inf if v == "" else float(v) for v in ascending]
    assert sorted(before) == sorted(ascending) and numbers == sorted(numbers)
    assert heading.get_attribute("aria-sort") == "ascending"
    heading.click()
    descending = [-math.inf if v == "" else float(v) for v in page.evaluate(values)]
    assert descending == sorted(numbers, reverse=True)
    assert heading.get_attribute("aria-sort") == "descending"
