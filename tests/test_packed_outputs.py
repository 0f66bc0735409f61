"""Packed outputs (Parquet files and WebDataset shards) and --features, on tiny random checkpoints.

Oracles: the per-item files and JSON records of the same run, the schema written in the README, and
transformers' PerceiverModel latents (last_hidden_state) for the features."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_cli.io.flo import read_flo
from tiny_models import TINY_CONFIGS, make_tiny_checkpoint

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed-models")
    for kind in ("vision-conv", "flow", "language"):
        make_tiny_checkpoint(kind, root / kind)
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(2)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _table(folder: Path):
    files = sorted(folder.glob("part-*.parquet"))
    assert files
    return pa.concat_tables([pq.read_table(path) for path in files])


def _array(row: dict, name: str) -> np.ndarray:
    return np.asarray(row[name]).reshape(row[f"{name}_shape"])


# The README's schemas, written out here as the documentation states them.
CLASSIFY_SCHEMA = [("input", "string"),
                   ("predictions", "list<element: struct<label: string, index: int64, score: double>>"),
                   ("key", "string"), ("logits", "list<element: float>"), ("logits_shape", "list<element: int32>"),
                   ("features", "list<element: float>"), ("features_shape", "list<element: int32>")]
FLOW_SCHEMA = [("input", "string"), ("input2", "string"), ("outputs", "list<element: string>"),
               ("mean_magnitude", "double"), ("max_magnitude", "double"), ("occluded", "double"),
               ("epe", "double"), ("epe_non_occluded", "double"), ("key", "string"),
               ("flow", "list<element: {}>"), ("flow_shape", "list<element: int32>")]


def _schema_of(path: Path) -> list[tuple[str, str]]:
    return [(field.name, str(field.type)) for field in pq.read_schema(path)]


def test_classify_parquet_holds_the_json_records_logits_and_pooled_features(checkpoints, images, tmp_path,
                                                                             run_main):
    out_dir = tmp_path / "packed"
    code, out, _ = run_main("classify", images, "-w", checkpoints / "vision-conv", "--json", "-q", "-o", out_dir,
                            "--format", "parquet", "--items-per-file", "2", "--features", "pooled")
    assert code == 0
    records = _records(out)
    files = sorted(out_dir.glob("part-*.parquet"))
    assert [p.name for p in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for path in files:
        assert _schema_of(path) == CLASSIFY_SCHEMA
    rows = _table(out_dir).to_pylist()
    assert [{"input": r["input"], "predictions": r["predictions"]} for r in rows] == records
    for row in rows:
        logits = _array(row, "logits")
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        best = [p["index"] for p in row["predictions"]]
        assert list(np.argsort(-probabilities)[:len(best)]) == best
        np.testing.assert_allclose([p["score"] for p in row["predictions"]], probabilities[best], rtol=1e-5)
        assert row["features_shape"] == [TINY_CONFIGS["vision-conv"]["d_latents"]]


def test_classify_wds_samples_hold_the_json_records_and_logits(checkpoints, images, tmp_path, run_main):
    out_dir = tmp_path / "wds"
    code, out, _ = run_main("classify", images, "-w", checkpoints / "vision-conv", "--json", "-q", "-o", out_dir,
                            "--format", "wds", "--items-per-file", "3", "--features", "latents")
    assert code == 0
    shards = sorted(out_dir.glob("part-*.tar"))
    assert [p.name for p in shards] == ["part-00000.tar", "part-00001.tar"]
    members = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                members[info.name] = tar.extractfile(info).read()
    keys = sorted({name.split(".")[0] for name in members})
    assert len(keys) == 5
    records = [json.loads(members[f"{key}.json"]) for key in keys]
    assert [{"input": r["input"], "predictions": r["predictions"]} for r in records] == _records(out)
    latents = np.load(io.BytesIO(members[f"{keys[0]}.features.npy"]))
    tiny = TINY_CONFIGS["vision-conv"]
    assert latents.shape == (tiny["num_latents"], tiny["d_latents"])
    assert np.load(io.BytesIO(members[f"{keys[0]}.logits.npy"])).shape == (10,)


def test_flow_parquet_float32_equals_the_flo_files_of_the_same_run(checkpoints, frames, tmp_path, run_main):
    out_dir = tmp_path / "out"
    code, out, _ = run_main("flow", frames, "-w", checkpoints / "flow", "--json", "-q", "-o", out_dir,
                            "--format", "flo,parquet", "--items-per-file", "2")
    assert code == 0
    records = _records(out)
    assert len(records) == 5
    for path in sorted(out_dir.glob("part-*.parquet")):
        assert _schema_of(path) == [(n, t.format("float")) for n, t in FLOW_SCHEMA]
    rows = _table(out_dir).to_pylist()
    assert [r["input"] for r in rows] == [r["input"] for r in records]
    for row, record in zip(rows, records):
        assert {k: row[k] for k in record} == record
        (flo,) = record["outputs"]
        np.testing.assert_array_equal(_array(row, "flow"), read_flo(flo))


def test_flow_parquet_float16_is_the_flow_rounded(checkpoints, frames, tmp_path, run_main):
    code, out, _ = run_main("flow", frames, "-w", checkpoints / "flow", "--json", "-q", "-o", tmp_path / "a",
                            "--format", "flo,parquet", "--precision", "float16")
    assert code == 0
    assert _schema_of(tmp_path / "a" / "part-00000.parquet") == [(n, t.format("halffloat")) for n, t in FLOW_SCHEMA]
    for row, record in zip(_table(tmp_path / "a").to_pylist(), _records(out)):
        exact = read_flo(record["outputs"][0])
        half = _array(row, "flow")  # halffloat values (the schema says so), read back as Python floats
        np.testing.assert_array_equal(half, exact.astype(np.float16).astype(np.float64))
        np.testing.assert_allclose(half.astype(np.float32), exact, rtol=1e-3, atol=1e-4)


def test_flow_parquet_alone_writes_no_per_pair_files(checkpoints, frames, tmp_path, run_main):
    code, out, _ = run_main("flow", frames, "-w", checkpoints / "flow", "--json", "-q", "-o", tmp_path / "p",
                            "--format", "parquet")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["part-00000.parquet"]
    assert all(record["outputs"] == [] for record in _records(out))


def test_flow_wds_flo_members_are_byte_equal_to_the_flo_files(checkpoints, frames, tmp_path, run_main):
    out_dir = tmp_path / "w"
    code, out, _ = run_main("flow", frames, "-w", checkpoints / "flow", "--json", "-q", "-o", out_dir,
                            "--format", "flo,wds", "--items-per-file", "4")
    assert code == 0
    records = {r["input"]: r for r in _records(out)}
    seen = 0
    for shard in sorted(out_dir.glob("part-*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            for name in names:
                if name.endswith(".json"):
                    record = json.loads(tar.extractfile(name).read())
                    flo_member = tar.extractfile(name[:-len("json")] + "flo").read()
                    assert flo_member == Path(records[record["input"]]["outputs"][0]).read_bytes()
                    seen += 1
    assert seen == len(records) == 5


def test_datasets_and_webdataset_read_the_shards(checkpoints, images, tmp_path, run_main):
    datasets = pytest.importorskip("datasets")
    webdataset = pytest.importorskip("webdataset")
    for fmt in ("parquet", "wds"):
        code, _, _ = run_main("classify", images, "-w", checkpoints / "vision-conv", "-q", "-o", tmp_path / fmt,
                              "--format", fmt, "--items-per-file", "2")
        assert code == 0
    import pandas

    assert sorted(pandas.read_parquet(tmp_path / "parquet")["input"]) == sorted(str(p) for p in images.glob("*.png"))
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "parquet" / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded["input"]) == sorted(str(p) for p in images.glob("*.png"))
    urls = [str(p) for p in sorted((tmp_path / "wds").glob("*.tar"))]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False).decode())
    assert sorted(s["json"]["input"] for s in samples) == sorted(str(p) for p in images.glob("*.png"))
    assert all(s["logits.npy"].shape == (10,) for s in samples)


# Runs `perceiver` in a child that SIGKILLs itself halfway through writing its second shard.
KILLER = """
import os, signal, sys
import pyarrow.parquet as pq
original, calls = pq.write_table, []
def write_table(table, where, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        where.write(b"PAR1 partial")
        where.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(table, where, **kwargs)
pq.write_table = write_table
from perceiver_cli.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(args: list, code: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "perceiver_cli"]
    return subprocess.run(command + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)


def _keys_by_shard(folder: Path) -> dict[str, list[str]]:
    return {str(path): pq.read_table(path, columns=["key"]).column("key").to_pylist()
            for path in sorted(folder.glob("part-*.parquet"))}


def _last_records(manifest: Path) -> dict[str, dict]:
    last = {}
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        last[record.get("key", record["input"])] = record
    return last


def test_sigkill_during_a_shard_write_then_resume_packs_every_item_once(checkpoints, images, tmp_path):
    out_dir, manifest = tmp_path / "out", tmp_path / "run.jsonl"
    args = ["classify", images, "-w", checkpoints / "vision-conv", "-q", "-o", out_dir, "--format", "parquet",
            "--items-per-file", "2", "--manifest", manifest]
    killed = _child(args, KILLER)
    assert killed.returncode == -9
    assert [p.name for p in out_dir.glob("part-*")] == ["part-00000.parquet"]  # the second never committed
    assert _child(args).returncode == 0
    by_shard = _keys_by_shard(out_dir)
    packed = [key for keys in by_shard.values() for key in keys]
    every = sorted(str(p) for p in images.glob("*.png"))
    assert sorted(packed) == every  # each item in exactly one committed shard
    assert not [p.name for p in out_dir.iterdir() if not p.name.startswith("part-") or ".partial" in p.name]
    for key, record in _last_records(manifest).items():
        assert record["status"] == "ok" and key in by_shard[record["shard"]]


def test_shard_runs_write_disjoint_files_that_together_hold_every_item(checkpoints, images, tmp_path, run_main):
    out_dir = tmp_path / "out"
    names = []
    for shard in ("0/2", "1/2"):
        before = set(out_dir.glob("*")) if out_dir.exists() else set()
        code, _, _ = run_main("classify", images, "-w", checkpoints / "vision-conv", "-q", "-o", out_dir,
                              "--format", "parquet", "--items-per-file", "1", "--shard", shard)
        assert code == 0
        names.append({p.name for p in set(out_dir.glob("*")) - before})
    assert names[0] and names[1] and not names[0] & names[1]
    assert all(name.startswith("part-00000of00002-") for name in names[0])
    packed = [key for keys in _keys_by_shard(out_dir).values() for key in keys]
    assert sorted(packed) == sorted(str(p) for p in images.glob("*.png"))


def test_features_need_a_packed_format(checkpoints, images, run_main):
    code, _, err = run_main("classify", images, "-w", checkpoints / "vision-conv", "--features", "pooled")
    assert code == 2 and "--format parquet or wds" in err


@pytest.mark.parametrize("kind,overrides", [("vision-conv", {}), ("vision-fourier", {}),
                                            ("vision-learned", {"image_size": 224})])
@torch.no_grad()
def test_classifier_latents_equal_transformers_last_hidden_state(tmp_path, kind, overrides):
    import perceiver_cli as pc
    from perceiver_cli.io.imagenet import preprocess_image

    hf = make_tiny_checkpoint(kind, tmp_path / kind, **overrides)
    model = pc.load_model(str(tmp_path / kind), device="cpu", numerics="transformers")
    image = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    pixels = np.empty((1, 3, 224, 224), dtype=np.float32)
    preprocess_image(image, pixels[0])
    expected = hf.perceiver(inputs=torch.from_numpy(pixels)).last_hidden_state[0].numpy()
    latents = pc.features(model, [image], kind="latents")
    assert latents.shape == (1, hf.config.num_latents, hf.config.d_latents)
    np.testing.assert_allclose(latents[0], expected, atol=1e-4)
    np.testing.assert_allclose(pc.features(model, [image], kind="pooled")[0], expected.mean(axis=0), atol=1e-4)


@torch.no_grad()
def test_language_latents_equal_transformers_last_hidden_state(tmp_path):
    import transformers
    import perceiver_cli as pc

    hf = make_tiny_checkpoint("language", tmp_path / "language")
    model = pc.load_model(str(tmp_path / "language"), device="cpu", numerics="transformers")
    texts = ["Hello, world.", "Perceiver IO reads bytes: é."]
    tokenizer = transformers.PerceiverTokenizer()
    latents = pc.features(model, texts, kind="latents")
    pooled = pc.features(model, texts, kind="pooled")
    assert latents.shape == (2, hf.config.num_latents, hf.config.d_latents)
    for i, text in enumerate(texts):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        expected = hf.perceiver(inputs=ids).last_hidden_state[0].numpy()
        np.testing.assert_allclose(latents[i], expected, atol=1e-4)
        np.testing.assert_allclose(pooled[i], expected.mean(axis=0), atol=1e-4)


def test_fill_mask_parquet_holds_records_and_latents(checkpoints, tmp_path, run_main):
    code, out, _ = run_main("fill-mask", "Hello [MASK] world", "a [MASK:3] b", "-w", checkpoints / "language",
                            "--json", "-q", "-o", tmp_path / "fm", "--format", "parquet", "--features", "latents")
    assert code == 0
    rows = _table(tmp_path / "fm").to_pylist()
    records = _records(out)
    for row, record in zip(rows, records):
        got = {k: row[k] for k in record}
        for mask in got["masks"]:  # Arrow maps read back as (key, value) pairs
            if mask["length_scores"] is not None:
                mask["length_scores"] = dict(mask["length_scores"])
            else:
                del mask["length_scores"]
        assert got == record
        tiny = TINY_CONFIGS["language"]
        assert row["features_shape"] == [tiny["num_latents"], tiny["d_latents"]]


def test_output_folder_and_packed_format_go_together(checkpoints, images, tmp_path, run_main):
    code, _, err = run_main("classify", images, "-w", checkpoints / "vision-conv", "-o", tmp_path / "x")
    assert code == 2 and "go together" in err
    code, _, err = run_main("classify", images, "-w", checkpoints / "vision-conv", "--format", "parquet")
    assert code == 2 and "go together" in err
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory):
    """(tiny multimodal checkpoint, a 6-frame video with sound) at the checkpoint's 16 x 16 frame size."""
    from synthetic_media import write_video

    root = tmp_path_factory.mktemp("multimodal")
    frames, size = 4, 16  # the tiny multimodal clip
    make_tiny_checkpoint("multimodal", root / "mm", num_frames=frames, output_shape=[1, frames, size, size],
                         audio_samples_per_frame=1920)
    return root / "mm", write_video(root / "clip.mp4", 6, size, size, "tone")


def test_autoencode_video_parquet_holds_records_media_bytes_logits_and_features(multimodal, tmp_path, run_main):
    weights, video = multimodal
    code, out, _ = run_main("autoencode-video", video, "-w", weights, "--json", "-q", "-o", tmp_path / "o",
                            "--format", "wav,parquet", "--features", "latents")
    assert code == 0
    (record,) = _records(out)
    (row,) = _table(tmp_path / "o").to_pylist()
    assert {k: row[k] for k in record} == record
    (wav,) = record["outputs"]
    assert row["wav"] == Path(wav).read_bytes()
    clips = len(record["clips"])
    tiny = TINY_CONFIGS["multimodal"]
    assert row["label_logits_shape"] == [clips, len(tiny["id2label"])]
    assert row["features_shape"] == [clips, tiny["num_latents"], tiny["d_latents"]]


def test_eval_classify_packs_each_record_with_its_truth(checkpoints, tmp_path, run_main):
    synsets = (REPO / "perceiver_cli" / "data" / "imagenet_synsets.txt").read_text().split()
    rng = np.random.default_rng(4)
    for index in (0, 5):
        (tmp_path / "val" / synsets[index]).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "val" / synsets[index]
                                                                                / "a.png")
    code, out, _ = run_main("eval", "classify", tmp_path / "val", "-w", checkpoints / "vision-conv", "--json", "-q",
                            "-o", tmp_path / "o", "--format", "parquet")
    assert code == 0
    records = _records(out)[:-1]  # the last line is the summary
    rows = _table(tmp_path / "o").to_pylist()
    assert [{k: row[k] for k in record} for row, record in zip(rows, records)] == records
    assert sorted(row["truth"]["index"] for row in rows) == [0, 5]
    assert _schema_of(sorted((tmp_path / "o").glob("*.parquet"))[0])[:3] == CLASSIFY_SCHEMA[:2] + [
        ("truth", "struct<label: string, index: int64>")]


def test_eval_flow_packs_each_pairs_record_and_flow(checkpoints, tmp_path, run_main):
    from perceiver_cli.io.flowfiles import write_kitti_png

    training = tmp_path / "data_scene_flow" / "training"
    for folder in ("image_2", "flow_occ", "flow_noc"):
        (training / folder).mkdir(parents=True)
    rng = np.random.default_rng(5)
    for scene in range(2):
        for frame in ("10", "11"):
            Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(
                training / "image_2" / f"{scene:06d}_{frame}.png")
        field = np.round(rng.normal(0, 2, (10, 14, 2)) * 64) / 64
        for folder in ("flow_occ", "flow_noc"):
            write_kitti_png(training / folder / f"{scene:06d}_10.png", field, np.ones((10, 14), bool))
    code, out, _ = run_main("eval", "flow", training.parent, "-w", checkpoints / "flow", "--json", "-q",
                            "-o", tmp_path / "o", "--format", "parquet")
    assert code == 0
    records = _records(out)[:-1]
    rows = _table(tmp_path / "o").to_pylist()
    assert len(rows) == len(records) == 2
    assert [{k: row[k] for k in record} for row, record in zip(rows, records)] == records
    assert all(row["flow_shape"] == [10, 14, 2] for row in rows)


def test_autoencode_video_features_without_packing_are_a_npy_beside_the_outputs(multimodal, tmp_path, run_main):
    weights, video = multimodal
    code, out, _ = run_main("autoencode-video", video, "-w", weights, "--json", "-q", "-o", tmp_path / "files",
                            "--format", "wav", "--features", "pooled")
    assert code == 0
    (record,) = _records(out)
    npy = tmp_path / "files" / "clip.features.npy"
    assert str(npy) in record["outputs"]
    code, _, _ = run_main("autoencode-video", video, "-w", weights, "-q", "-o", tmp_path / "packed", "--format",
                          "wav,parquet", "--features", "pooled")
    assert code == 0
    (row,) = _table(tmp_path / "packed").to_pylist()
    np.testing.assert_array_equal(np.load(npy), _array(row, "features").astype(np.float32))
    assert np.load(npy).shape == (len(record["clips"]), TINY_CONFIGS["multimodal"]["d_latents"])
    code, _, err = run_main("autoencode-video", video, "-w", weights, "--features", "pooled")
    assert code == 2 and "-o DIR" in err


def test_a_file_as_the_packed_folder_is_a_usage_error_and_stays(checkpoints, images, tmp_path, run_main):
    target = tmp_path / "taken"
    target.write_text("mine")
    code, _, err = run_main("classify", images, "-w", checkpoints / "vision-conv", "-o", target, "--format", "wds")
    assert code == 2 and "is a file" in err
    assert target.read_text() == "mine"


def test_an_output_named_like_a_file_is_no_packed_folder(checkpoints, frames, tmp_path, run_main):
    code, _, err = run_main("flow", frames, "-w", checkpoints / "flow", "-o", tmp_path / "flow.mp4", "--format",
                            "parquet")
    assert code == 2 and "names a file" in err
    assert not (tmp_path / "flow.mp4").exists()


def test_ctrl_c_commits_the_open_file_with_exactly_the_items_the_manifest_records(checkpoints, images, tmp_path,
                                                                                    run_main, monkeypatch):
    from perceiver_cli.tasks.report import Reporter

    seen, original = [], Reporter.result

    def interrupted(self, result):
        seen.append(result)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return original(self, result)

    monkeypatch.setattr(Reporter, "result", interrupted)
    manifest = tmp_path / "run.jsonl"
    code, _, _ = run_main("classify", images, "-w", checkpoints / "vision-conv", "-q", "-o", tmp_path / "o",
                          "--format", "parquet", "--manifest", manifest)
    assert code == 130
    packed = [key for keys in _keys_by_shard(tmp_path / "o").values() for key in keys]
    assert sorted(packed) == sorted(_last_records(manifest)) and len(packed) == 2


def test_python_autoencode_features_equal_the_clis_features_file(tmp_path, run_main):
    import av

    import perceiver_cli as pc
    from synthetic_media import write_video

    make_tiny_checkpoint("multimodal", tmp_path / "mm", num_frames=4, output_shape=[1, 4, 16, 16],
                         audio_samples_per_frame=1920)
    video = write_video(tmp_path / "quiet.mp4", 6, 16, 16, None)  # no sound: both reconstruct from silence
    code, _, _ = run_main("autoencode-video", video, "-w", tmp_path / "mm", "-q", "-o", tmp_path / "o", "--format",
                          "npz", "--features", "latents")
    assert code == 0
    expected = np.load(tmp_path / "o" / "quiet.features.npy")
    with av.open(str(video)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    model = pc.load_model(str(tmp_path / "mm"), device="cpu")
    latents = pc.autoencode(model, frames, None, features="latents")["features"]
    tiny = TINY_CONFIGS["multimodal"]
    assert latents.shape == (2, tiny["num_latents"], tiny["d_latents"])  # 6 frames: two 4-frame clips
    np.testing.assert_allclose(latents, expected, rtol=0, atol=1e-6)
    pooled = pc.autoencode(model, frames, None, features="pooled")["features"]
    np.testing.assert_allclose(pooled, expected.mean(axis=1), rtol=0, atol=1e-6)


def test_flow_both_directions_packs_the_backward_flow_and_occlusion_beside_the_forward_flow(checkpoints, frames,
                                                                                         tmp_path, run_main):
    common = ["flow", frames, "-w", checkpoints / "flow", "--json", "-q", "--direction", "both",
              "--occlusion-format", "npy", "--items-per-file", "3"]
    code, out, _ = run_main(*common, "-o", tmp_path / "p", "--format", "flo,parquet")
    assert code == 0
    records = _records(out)
    both = [("flow_backward", "list<element: float>"), ("flow_backward_shape", "list<element: int32>"),
            ("occlusion", "list<element: bool>"), ("occlusion_shape", "list<element: int32>")]
    for path in sorted((tmp_path / "p").glob("part-*.parquet")):
        assert _schema_of(path) == [(n, t.format("float")) for n, t in FLOW_SCHEMA] + both
    rows = _table(tmp_path / "p").to_pylist()
    assert len(rows) == len(records) == 5

    for row, record in zip(rows, records):
        assert {k: row[k] for k in record} == record
        forward, backward, occlusion = _flow_files(record)
        np.testing.assert_array_equal(_array(row, "flow"), read_flo(forward))
        np.testing.assert_array_equal(_array(row, "flow_backward"), read_flo(backward))
        np.testing.assert_array_equal(_array(row, "occlusion"), np.load(occlusion))
        assert row["occluded"] == pytest.approx(np.load(occlusion).mean())
    code, out, _ = run_main(*common, "-o", tmp_path / "w", "--format", "flo,wds")
    assert code == 0
    members = {}
    for shard in sorted((tmp_path / "w").glob("part-*.tar")):
        with tarfile.open(shard) as tar:
            members.update({info.name: tar.extractfile(info).read() for info in tar.getmembers()})
    for record in _records(out):
        key = next(name[:-len(".json")] for name in members
                   if name.endswith(".json") and json.loads(members[name])["input"] == record["input"])
        forward, backward, occlusion = _flow_files(record)
        assert members[f"{key}.flo"] == Path(forward).read_bytes()
        assert members[f"{key}.flow_backward.flo"] == Path(backward).read_bytes()
        np.testing.assert_array_equal(np.load(io.BytesIO(members[f"{key}.occlusion.npy"])), np.load(occlusion))


def _flow_files(record: dict) -> tuple[str, str, str]:
    """A --direction both record's forward .flo, backward .flo and occlusion .npy."""
    outputs = record["outputs"]
    backward = next(p for p in outputs if p.endswith("_backward.flo"))
    forward = next(p for p in outputs if p.endswith(".flo") and p != backward)
    return forward, backward, next(p for p in outputs if p.endswith("_occlusion.npy"))
