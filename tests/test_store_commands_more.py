"""More commands on an object store, against the same loopback S3 server as test_store_commands: the eval
commands' dataset roots and --report pages at URLs, draw-flow reading and writing objects, flow --recursive
over a prefix, and a command whose store goes away while it uploads an output."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from perceiver_cli.io import store_write  # noqa: E402
from perceiver_cli.io.flo import write_flo  # noqa: E402
from s3_server import bucket, server, spool  # noqa: E402,F401 (fixtures)
from test_eval_classify import CLASSES, WNIDS  # noqa: E402
from test_html_report import Page  # noqa: E402
from test_store_commands import (bucket_bytes, error_lines, flow_weights, renamed, run, save_noise,  # noqa: E402,F401
                                 tree_bytes, upload_tree)
from tiny_models import make_tiny_checkpoint  # noqa: E402

MiB = 2**20


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store-weights") / "vision-conv"
    make_tiny_checkpoint("vision-conv", folder, seed=3)
    return folder


def page_figures(html: str) -> tuple[list, list]:
    """A report page's numbers (key, exact value, card) and pictures: what differs between two runs of the
    same data is only the page's date, command and the places named."""
    page = Page(html)
    return page.numbers, page.images


# eval classify and eval autoencode-video


def test_eval_classify_on_a_bucket_gives_the_local_records_summary_and_report(bucket, vision, tmp_path, capsys):
    root = tmp_path / "val"
    for n, index in enumerate(CLASSES):
        for k in range(1 + n % 2):
            save_noise(root / WNIDS[index] / f"img{k}.png", 10 * n + k)
    save_noise(root / ".hidden" / "x.png", 99)
    upload_tree(bucket, root, "imagenet/val")
    common = ["-w", str(vision), "--json", "--report-worst", "2"]
    code, local, err = run(capsys, "eval", "classify", str(root), *common, "--report", str(tmp_path / "r.html"))
    assert code == 0, err
    assert len(local) == 7 and local[-1]["items"] == 6
    url = bucket.url("imagenet/val")
    bucket.server.requests.clear()
    code, remote, err = run(capsys, "eval", "classify", url, *common, "--report", bucket.url("reports/r.html"))
    assert code == 0, err
    listings = [query for _, _, query, _ in bucket.server.requests if "list-type=2" in query]
    assert len(listings) <= len(CLASSES) + 2  # the root looked at and listed once, each class folder listed once
    assert remote == renamed(local, str(root), url)
    assert bucket.keys().count("reports/r.html") == 1
    page = bucket.get("reports/r.html").decode("utf-8")
    assert page_figures(page) == page_figures((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert url in page


def test_eval_classify_reads_a_labels_file_at_a_url(bucket, vision, tmp_path, capsys):
    flat = tmp_path / "flat"
    for k in range(3):
        save_noise(flat / f"v{k}.png", k)
    (flat / "labels.txt").write_text("v0.png 3\nv1.png 0\nv2.png 7\n")
    upload_tree(bucket, flat, "flat")
    common = ["-w", str(vision), "--json"]
    code, local, err = run(capsys, "eval", "classify", str(flat), "--labels", str(flat / "labels.txt"), *common)
    assert code == 0, err
    code, remote, err = run(capsys, "eval", "classify", bucket.url("flat"), "--labels",
                            bucket.url("flat/labels.txt"), *common)
    assert code == 0, err
    assert remote == renamed(local, str(flat), bucket.url("flat"))
    code, _, err = run(capsys, "eval", "classify", bucket.url("flat"), "--labels", bucket.url("flat/gone.txt"),
                       *common)
    assert code == 2
    assert error_lines(err) == [f"perceiver: error: {bucket.url('flat/gone.txt')}: cannot read the labels file "
                                "(no such file or folder)"]


def test_eval_autoencode_video_on_a_bucket_gives_the_local_records_and_summary(bucket, tmp_path, capsys):
    from synthetic_media import write_video
    from test_eval_autoencode import SIZE, SPF, T

    weights = tmp_path / "multimodal"
    make_tiny_checkpoint("multimodal", weights, seed=5, num_frames=T, output_shape=[1, T, SIZE, SIZE],
                         audio_samples_per_frame=SPF)
    clips = tmp_path / "clips"
    (clips / "action_3").mkdir(parents=True)
    write_video(clips / "action_3" / "a.mp4", T + 1)
    write_video(clips / "c.mp4", T)
    upload_tree(bucket, clips, "k700")
    common = ["-w", str(weights), "--json"]
    code, local, err = run(capsys, "eval", "autoencode-video", str(clips), *common)
    assert code == 0, err
    assert len(local) == 3 and local[-1]["items"] == 2 and local[-1]["labelled"] == 1
    code, remote, err = run(capsys, "eval", "autoencode-video", bucket.url("k700/"), *common)
    assert code == 0, err
    assert remote == renamed(renamed(local, str(clips) + "/", bucket.url("k700/")), str(clips), bucket.url("k700/"))


# --report and draw-flow


def test_flow_gt_report_is_written_to_a_url(bucket, flow_weights, tmp_path, capsys):
    frames = tmp_path / "seq"
    for seed, name in enumerate(["f1.png", "f2.png"]):
        save_noise(frames / name, seed + 20)
    (tmp_path / "gt").mkdir()
    write_flo(tmp_path / "gt" / "f1.flo", np.random.default_rng(1).normal(0, 1, (12, 16, 2)).astype(np.float32))
    common = ["-w", str(flow_weights), "--json", "--gt", str(tmp_path / "gt"), "--report-worst", "1"]
    code, local, err = run(capsys, "flow", str(frames), *common, "--report", str(tmp_path / "p.html"))
    assert code == 0, err
    code, remote, err = run(capsys, "flow", str(frames), *common, "--report", bucket.url("p.html"))
    assert code == 0, err
    assert remote == local
    assert page_figures(bucket.get("p.html").decode()) == page_figures((tmp_path / "p.html").read_text())
    code, _, err = run(capsys, "flow", str(frames), *common, "--report", bucket.url("p.txt"))
    assert code == 2
    assert "--report writes an HTML page" in err


def test_draw_flow_reads_flow_objects_and_writes_pictures_to_the_store(bucket, tmp_path, capsys):
    rng = np.random.default_rng(4)
    (tmp_path / "in").mkdir()
    write_flo(tmp_path / "in" / "x.flo", rng.normal(0, 3, (8, 12, 2)).astype(np.float32))
    np.save(tmp_path / "in" / "v.npy", rng.normal(0, 3, (2, 8, 12, 2)).astype(np.float32))
    upload_tree(bucket, tmp_path / "in", "in")
    code, local, err = run(capsys, "draw-flow", str(tmp_path / "in" / "x.flo"), str(tmp_path / "in" / "v.npy"),
                           "-o", str(tmp_path / "out") + "/", "--json")
    assert code == 0, err
    code, remote, err = run(capsys, "draw-flow", bucket.url("in/x.flo"), bucket.url("in/v.npy"),
                            "-o", bucket.url("out/"), "--json")
    assert code == 0, err
    assert remote == renamed(renamed(local, str(tmp_path / "out") + "/", bucket.url("out/")),
                             str(tmp_path / "in") + "/", bucket.url("in/"))
    assert bucket_bytes(bucket, "out") == tree_bytes(tmp_path / "out")
    assert sorted(bucket_bytes(bucket, "out")) == ["v_000000.png", "v_000001.png", "x.png"]
    code, beside, err = run(capsys, "draw-flow", bucket.url("in/x.flo"), "--json")
    assert code == 0, err
    assert beside[0]["outputs"] == [bucket.url("in/x.png")]
    assert bucket.get("in/x.png") == (tmp_path / "out" / "x.png").read_bytes()


# flow --recursive over a prefix


def test_flow_recursive_over_a_prefix_gives_the_pairs_of_the_local_walk_from_one_listing(
        bucket, flow_weights, tmp_path, capsys):
    from PIL import Image

    scenes = tmp_path / "scenes"
    for seed, name in enumerate(["t1.png", "t2.png", "b/b_2.png", "b/b_10.png", "b/b_1.png", "a/deep/d1.png",
                                 "a/deep/d2.png", "a/one.png", ".hid/h1.png", ".hid/h2.png"]):
        save_noise(scenes / name, seed + 50)
    (scenes / "masks").mkdir()
    for name in ("m1.png", "m2.png"):  # a folder of greyscale masks is ground truth, not frames
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(scenes / "masks" / name)
    upload_tree(bucket, scenes, "scenes")
    common = ["--recursive", "-w", str(flow_weights), "--json", "--format", "flo"]
    code, local, err = run(capsys, "flow", str(scenes), "-o", str(tmp_path / "out") + "/", *common)
    assert code == 0, err
    assert [r["input"].removeprefix(str(scenes) + "/") for r in local] == ["t1.png", "a/deep/d1.png", "b/b_1.png",
                                                                            "b/b_2.png"]
    bucket.server.requests.clear()
    code, remote, err = run(capsys, "flow", bucket.url("scenes/"), "-o", bucket.url("out/"), *common)
    assert code == 0, err
    listings = [query for method, _, query, _ in bucket.server.requests if "list-type=2" in query]
    assert remote == renamed(renamed(local, str(tmp_path / "out") + "/", bucket.url("out/")), str(scenes) + "/",
                             bucket.url("scenes/"))
    assert bucket_bytes(bucket, "out") == tree_bytes(tmp_path / "out")
    # the prefix is listed whole (when checked, then when run; once more if writing an output has emptied the
    # client's listing cache meanwhile), never a listing per folder (six here) or a request per object
    assert listings and {parse_qs(query)["prefix"][0] for query in listings} == {"scenes/"}
    assert len(listings) < 6


# the store going away while a command uploads


def test_a_store_gone_mid_upload_stops_the_command_with_one_line_and_leaves_no_output(
        bucket, flow_weights, tmp_path, spool, capsys, monkeypatch):
    monkeypatch.setattr(store_write, "SINGLE_PUT_BYTES", 1)  # every output a multipart upload
    monkeypatch.setattr(store_write, "PART_BYTES", 5 * MiB)
    frames = tmp_path / "seq"
    for seed, name in enumerate(["f1.png", "f2.png", "f3.png"]):
        save_noise(frames / name, seed + 30)
    server = bucket.server

    def go_away(method, path, query):
        if method == "POST" and "uploads" in query and "/out/" in path:
            server.halt()  # the upload is started; its part and completion find no store

    server.hook = go_away
    code, records, err = run(capsys, "flow", str(frames), "-o", bucket.url("out/"), "-w", str(flow_weights),
                             "--json", "--format", "flo,png")
    server.hook = None
    assert (code, records) == (2, [])
    assert error_lines(err) == [f"perceiver: error: {bucket.url('out/f1.flo')}: cannot reach the store at "
                                f"{server.endpoint}"]
    server.start()
    assert bucket.keys() == []  # an unfinished multipart upload is invisible; nothing at any final key
    assert list(spool.iterdir()) == []
