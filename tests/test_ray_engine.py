"""--engine ray: the same records and files as the local engine, a bad item is a record and the rest completes,
a node that dies mid-run has its items redone elsewhere, and every item ends with exactly one record.

A Ray cluster on this machine, bound to loopback: one `ray.init(num_cpus=2)` cluster shared by the module's
tests, then (last) a head node and two one-CPU worker nodes made with ray.cluster_utils.Cluster. Classify runs
on a tiny random vision-conv checkpoint; the node test uses a light task defined here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pytest
from PIL import Image

# Ray would turn 127.0.0.1 into this machine's network address when joining a cluster; keep it on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# The module's own clusters run their workers at this process's priority, as the engine's local cluster does
# (Ray's default, 15 nicer, leaves them almost no CPU beside other work: the suite must pass on a busy machine).
os.environ["RAY_worker_niceness"] = "0"
import ray  # noqa: E402 - the [ray] extra, which the test command installs
import ray.data  # noqa: E402,F401

from perceiver_cli.cli import main  # noqa: E402
from perceiver_cli.tasks.base import Item, Result, Task  # noqa: E402
from perceiver_cli.tasks.engine import RuntimeRequest, ScaleOptions  # noqa: E402
from perceiver_cli.tasks.manifest import Manifest  # noqa: E402
from perceiver_cli.tasks.ray_engine import run_ray  # noqa: E402
from perceiver_cli.tasks.report import Reporter  # noqa: E402
from tiny_models import make_tiny_checkpoint  # noqa: E402

LOOPBACK = "127.0.0.1"
# One model thread per worker, as in this test process (conftest): equal floats on both engines.
ONE_CPU = dict(engine="ray", workers=1, cpus_per_worker=1)


@pytest.fixture(scope="module")
def local_ray():
    """A two-CPU Ray cluster on loopback, shared by the module's tests (the engine joins it)."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address=LOOPBACK, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-weights") / "vision-conv"
    make_tiny_checkpoint("vision-conv", folder, seed=4)
    return folder


def _photos(folder: Path, count: int, grow: int = 1) -> Path:
    """`count` noise images; each `grow` rows taller than the one before."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (12 + grow * i, 16, 3), dtype=np.uint8)).save(
            folder / f"{i:02d}.png")
    return folder


def _classify(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["classify", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_classify_on_ray_gives_the_local_engines_records(local_ray, tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", 11)
    common = [str(folder), "-w", str(weights), "--json", "-k", "3"]
    code, local, _ = _classify(capsys, *common)
    assert code == 0 and len(local) == 11
    manifest = tmp_path / "run.jsonl"
    code, remote, err = _classify(capsys, *common, "--engine", "ray", "--workers", "1", "--cpus-per-worker", "1",
                                  "--manifest", str(manifest))
    assert code == 0 and err == ""
    assert remote == local  # input order, equal floats
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["input"] for r in records] == [r["input"] for r in local]
    assert all(r["status"] == "ok" and r["worker"] and r["worker"].split(":")[1] != str(os.getpid())
               for r in records)  # run by a worker process, not this one


def test_more_workers_than_a_call_needs_print_no_ray_warning_and_each_gets_items(local_ray, tmp_path, weights,
                                                                                  capsys):
    folder = _photos(tmp_path / "photos", 3)
    common = [str(folder), "-w", str(weights), "--json", "-k", "2"]
    code, local, _ = _classify(capsys, *common)
    manifest = tmp_path / "run.jsonl"
    with warnings.catch_warnings(record=True) as shown:  # what would have reached stderr
        warnings.simplefilter("always")
        code, remote, err = _classify(capsys, *common, "--engine", "ray", "--workers", "2", "--cpus-per-worker",
                                      "1", "--manifest", str(manifest))
    assert code == 0 and err == ""
    assert [str(w.message) for w in shown if w.category is UserWarning] == []  # Ray's warnings go to its log
    assert remote == local
    log = Path(tempfile.gettempdir()) / "ray" / "perceiver-driver.log"
    assert log.exists()


def test_the_pool_is_no_larger_than_the_items_and_splits_them_into_calls_for_every_worker(monkeypatch):
    from perceiver_cli.tasks import ray_engine

    seen = {}

    class FakeData:
        class DataContext:
            @staticmethod
            def get_current():
                class Options:
                    preserve_order = False
                context = type("Context", (), {})()
                context.execution_options = Options()
                return context

        @staticmethod
        def ActorPoolStrategy(size):
            seen["workers"] = size
            return size

        @staticmethod
        def from_items(rows, override_num_blocks):
            seen["blocks"] = override_num_blocks

            class Dataset:
                def map_batches(self, *args, batch_size, **kwargs):
                    seen["per_call"] = batch_size
                    return self

                def iter_batches(self, **kwargs):
                    return iter(())
            return Dataset()

    fake = type("FakeRay", (), {"data": FakeData})
    monkeypatch.setattr(ray_engine, "_pool_size", lambda ray, scale: (4, 1.0, 0.0))
    task = type("T", (), {"accelerator_batch_size": 8, "cpu_batch_size": 8})()
    items = [Item(i, f"x{i}") for i in range(3)]
    list(ray_engine._remote_results(fake, task, RuntimeRequest(), ScaleOptions(engine="ray"), items))
    assert seen == {"workers": 3, "blocks": 3, "per_call": 1}
    items = [Item(i, f"x{i}") for i in range(100)]
    list(ray_engine._remote_results(fake, task, RuntimeRequest(), ScaleOptions(engine="ray"), items))
    assert seen == {"workers": 4, "blocks": 4, "per_call": 25}


def test_a_bad_item_in_the_middle_is_a_failed_record_and_the_rest_completes(local_ray, tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", 6)
    (folder / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = [str(folder), str(tmp_path / "missing.png"), "-w", str(weights), "--json"]
    code, local, _ = _classify(capsys, *common)
    code_ray, remote, err = _classify(capsys, *common, "--engine", "ray", "--workers", "1",
                                      "--cpus-per-worker", "1")
    assert code == code_ray == 1
    assert [r["input"] for r in remote] == [r["input"] for r in local]
    assert [r.get("error") for r in remote] == [r.get("error") for r in local]
    assert [("error" in r) for r in remote] == [False, False, False, True, False, False, True]
    assert err.count("perceiver: error:") == 2


def test_a_worker_that_cannot_load_the_model_is_a_one_line_usage_error(local_ray, tmp_path, capsys):
    folder = _photos(tmp_path / "photos", 2)
    (tmp_path / "empty").mkdir()
    code = main(["classify", str(folder), "-w", str(tmp_path / "empty"), "--engine", "ray", "--workers", "1",
                 "--cpus-per-worker", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("perceiver: error:")


def test_a_missing_ray_is_a_usage_error_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["classify", str(tmp_path), "--engine", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'perceiver-cli[ray]'" in err


def test_ray_options_without_the_ray_engine_are_usage_errors(tmp_path, capsys):
    code = main(["classify", str(tmp_path), "--workers", "2"])
    assert code == 2 and "--workers is for --engine ray" in capsys.readouterr().err


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _run(capsys, command: str, *args: str) -> tuple[int, list[dict]]:
    code = main([command, *args])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_flow_on_ray_over_frames_and_a_video_writes_the_local_engines_files(local_ray, tmp_path, capsys):
    from synthetic_media import write_video

    weights = tmp_path / "flow"
    make_tiny_checkpoint("flow", weights)
    frames = _photos(tmp_path / "frames", 5, grow=0)
    clip = write_video(tmp_path / "clip.mp4", 5, sound=None)
    for source, name in ((frames, "frames"), (clip, "video")):
        runs = {}
        for engine in ("local", "ray"):
            out = tmp_path / f"{name}-{engine}"
            extra = ["--engine", "ray", "--workers", "1", "--cpus-per-worker", "1"] if engine == "ray" else []
            runs[engine] = _run(capsys, "flow", str(source), "-w", str(weights), "-o", f"{out}/", "--format",
                                "flo,npy", "--json", "-b", "2", *extra)
            runs[engine][1][:] = [{**r, "outputs": [Path(o).name for o in r.get("outputs", [])]}
                                  for r in runs[engine][1]]
        assert runs["ray"] == runs["local"] and runs["local"][0] == 0 and len(runs["local"][1]) == 4
        assert _files(tmp_path / f"{name}-ray") == _files(tmp_path / f"{name}-local")  # byte for byte


def _video_frames(path: Path) -> list[np.ndarray]:
    from synthetic_media import iter_frames

    return list(iter_frames(path))


def _not_on_the_driver(task, path: Path) -> Iterator[Item]:
    pytest.fail("the driver decoded the video")
    yield


def test_flow_on_ray_splits_a_video_over_workers_and_assembles_its_flow_video_and_npy(local_ray, tmp_path, capsys,
                                                                                     monkeypatch):
    from synthetic_media import write_video

    from perceiver_cli.tasks.flow import FlowTask

    weights = tmp_path / "flow"
    make_tiny_checkpoint("flow", weights)
    clip = write_video(tmp_path / "clip.mp4", 9, sound=None)
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"] if engine == "ray" else []
        if engine == "ray":  # the workers decode their own frames: the driver lists no pair
            monkeypatch.setattr(FlowTask, "_video_pairs", _not_on_the_driver)
        code, records = _run(capsys, "flow", str(clip), "-w", str(weights), "-o", f"{out}/", "-o",
                             str(out / "all.npy"), "-o", str(out / "flow.mp4"), "--step", "2", "--json", *extra)
        runs[engine] = code, [{**r, "outputs": [str(Path(o).relative_to(out)) for o in r.get("outputs", [])]}
                              for r in records]
    assert runs["ray"] == runs["local"] and runs["local"][0] == 0 and len(runs["local"][1]) == 7
    assert [r["input"] for r in runs["ray"][1]] == [f"{clip}#{i}" for i in range(7)]  # each pair once, in order
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len(local) == 7 + 2
    assert all(local[name] == remote[name] for name in local if name != "flow.mp4")  # .flo and .npy: bytes
    assert np.load(tmp_path / "ray" / "all.npy").shape[0] == 7
    mine, theirs = _video_frames(tmp_path / "local" / "flow.mp4"), _video_frames(tmp_path / "ray" / "flow.mp4")
    assert len(mine) == len(theirs) == 7 and all(np.array_equal(a, b) for a, b in zip(mine, theirs))


@pytest.mark.parametrize("flag", [["--manifest", "run.jsonl"], ["--shard", "0/2"], ["--skip-existing"]])
def test_a_flow_video_output_is_refused_when_the_run_resumes_or_shards(local_ray, tmp_path, capsys, flag):
    from synthetic_media import write_video

    clip = write_video(tmp_path / "clip.mp4", 3, sound=None)
    flag = [str(tmp_path / f) if f.endswith(".jsonl") else f for f in flag]
    code = main(["flow", str(clip), "-w", str(tmp_path), "-o", str(tmp_path / "flow.mp4"), "--engine", "ray", *flag])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{flag[0]}: an output spanning the whole run" in err
    assert not (tmp_path / "flow.mp4").exists()


@pytest.mark.parametrize("step", [1, 2, 3, 5])
def test_video_segments_hold_every_pair_exactly_once(step):
    from perceiver_cli.io.video import stepped_pairs
    from perceiver_cli.tasks.flow_segments import pairs_in_range, segment_ranges

    for frames in range(0, 23):
        whole = [(t, a, b) for t, a, b in stepped_pairs(range(frames), step)]
        for estimate in {max(1, frames - step), 1, frames + 4, max(1, frames // 2)}:  # estimates may be off
            for count in (1, 2, 3, 4, 8, 40):
                ranges = segment_ranges(estimate, count)
                assert 1 <= len(ranges) <= count and ranges[0][0] == 0 and ranges[-1][1] is None
                assert all(ranges[k][1] == ranges[k + 1][0] for k in range(len(ranges) - 1))
                read: list[int] = []

                def counted(k: int):
                    read.append(k)
                    return k

                parts = []
                for first, last in ranges:
                    read.clear()
                    parts.extend(pairs_in_range((counted(k) for k in range(frames)), step, first, last))
                    if last is not None:  # a segment decodes no frame beyond its last pair's second frame
                        assert max(read, default=-1) <= last - 1 + step
                assert parts == whole, (frames, step, estimate, count)


def test_autoencode_video_on_ray_over_two_clips_writes_the_local_engines_outputs(local_ray, tmp_path, capsys):
    from synthetic_media import write_video

    weights = tmp_path / "multimodal"
    make_tiny_checkpoint("multimodal", weights, num_frames=4, output_shape=[1, 4, 16, 16],
                         audio_samples_per_frame=1920)
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", 6)
    write_video(clips / "b.mp4", 9)
    runs = {}
    for engine in ("local", "ray"):
        extra = ["--engine", "ray", "--workers", "1", "--cpus-per-worker", "1"] if engine == "ray" else []
        code, records = _run(capsys, "autoencode-video", str(clips), "-w", str(weights), "-o",
                             f"{tmp_path / engine}/", "--format", "wav,npz", "--json", *extra)
        runs[engine] = code, [{**r, "outputs": [Path(o).name for o in r["outputs"]]} for r in records]
    assert runs["ray"] == runs["local"] and runs["local"][0] == 0 and len(runs["local"][1]) == 2
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(remote) == ["a.npz", "a.wav", "b.npz", "b.wav"]
    assert local["a.wav"] == remote["a.wav"] and local["b.wav"] == remote["b.wav"]
    for name in ("a.npz", "b.npz"):  # an .npz stamps its write time in the zip: its arrays are compared
        with np.load(tmp_path / "local" / name) as mine, np.load(tmp_path / "ray" / name) as theirs:
            assert sorted(mine.files) == sorted(theirs.files)
            assert all(np.array_equal(mine[key], theirs[key]) for key in mine.files)


def test_fill_mask_over_stdin_on_ray_gives_the_local_engines_records(local_ray, tmp_path, capsys, monkeypatch):
    import io

    weights = tmp_path / "language"
    make_tiny_checkpoint("language", weights, seed=1)
    lines = b"a [MASK:1] b\nbad [MASK:0\nc [MASK:2]\n"  # a bad line in the middle: the task words its record
    runs = {}
    for engine in ("local", "ray"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines), encoding="utf-8"))
        extra = ["--engine", "ray", "--workers", "1", "--cpus-per-worker", "1"] if engine == "ray" else []
        runs[engine] = _run(capsys, "fill-mask", "-", "-w", str(weights), "-k", "2", "--json", *extra)
    assert runs["ray"] == runs["local"] and runs["local"][0] == 1
    assert [r.get("line") for r in runs["local"][1]] == [1, 2, 3] and "error" in runs["local"][1][1]


class SlowWriteTask(Task):
    """Writes "<input> <node id>" to OUT/<input>.txt, slowly; the record names the Ray node that ran it."""

    name = "slow-write"

    def __init__(self, count: int, out: Path, seconds: float):
        self.count, self.out, self.seconds = count, out, seconds

    def items(self) -> list[Item]:
        return [Item(i, f"item{i:03d}", outputs=(str(self.out / f"item{i:03d}.txt"),)) for i in range(self.count)]

    def setup(self, runtime, model=None) -> None:
        pass

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        import ray as worker_ray

        node = worker_ray.get_runtime_context().get_node_id()
        for item in items:
            time.sleep(self.seconds)
            Path(item.outputs[0]).write_text(f"{item.input} {node}")
            yield Result(item, {"input": item.input, "node": node}, outputs=list(item.outputs))


def test_a_node_removed_mid_run_has_its_items_redone_elsewhere_and_each_recorded_once(tmp_path, capsys):
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the module's local cluster, if a test above started it
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get SlowWriteTask by value
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False,
                                                                node_ip_address=LOOPBACK))
    out = tmp_path / "out"
    out.mkdir()
    removed: list[str] = []
    try:
        workers = [cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK) for _ in range(2)]
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)

        def remove_the_busy_node() -> None:  # once the worker has written its first file, its node goes
            while not removed:
                first = out / "item000.txt"
                if first.exists() and first.read_text().strip():
                    node_id = first.read_text().split()[1]
                    cluster.remove_node(next(n for n in workers if n.node_id == node_id), allow_graceful=False)
                    removed.append(node_id)
                time.sleep(0.02)

        remover = threading.Thread(target=remove_the_busy_node, daemon=True)
        remover.start()
        task = SlowWriteTask(16, out, 0.3)  # calls of 8 items: the first is running when its node goes
        manifest = Manifest(tmp_path / "run.jsonl")
        try:
            code = run_ray(task, RuntimeRequest("cpu", batch_size=2), Reporter(task, json_lines=True, quiet=True),
                           ScaleOptions(**ONE_CPU), listeners=[manifest.record])
        finally:
            manifest.close()
            removed.append("")  # stops the remover if the run ended first
            remover.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    names = [f"item{i:03d}" for i in range(16)]
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and removed[0]
    assert [r["input"] for r in records] == names
    assert records[0]["node"] != removed[0]  # the item in flight on the removed node was redone elsewhere
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert sorted(r["input"] for r in lines) == names and all(r["status"] == "ok" for r in lines)
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.txt" for name in names]
    assert all((out / f"{r['input']}.txt").read_text() == f"{r['input']} {r['node']}" for r in records)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_video_segments_list_the_pairs_and_decoding_errors_of_the_one_process_run(step, monkeypatch):
    import perceiver_cli.io.video as video
    from perceiver_cli.errors import InputError
    from perceiver_cli.tasks.flow import FlowTask

    def summary(items: Iterable[Item]) -> list[tuple]:
        return [(i.index, i.input, i.error, i.data.stem if i.data is not None else None) for i in items]

    for frames in range(0, 8):
        for broken in [None, *range(frames)]:  # the frame whose decoding fails
            def timed_frames(path, start_s=None, end_s=None):
                for k in range(frames):
                    if k == broken:
                        raise InputError(f"{path}: frame {k} is damaged")
                    yield k / 25, np.full((2, 2, 3), k, np.uint8)

            monkeypatch.setattr(video, "iter_timed_frames", timed_frames)
            task = FlowTask(["clip.mp4"], step=step)
            task._video = Path("clip.mp4")
            whole = summary(task._video_pairs(Path("clip.mp4")))
            for estimate in (1, max(1, frames - step), frames + 3):
                task.capacity = estimate
                for count in (1, 2, 3, 5):
                    parts = [i for segment in task.segments(count) for i in task._segment_pairs(segment.data)]
                    assert summary(parts) == whole, (frames, broken, estimate, count)


def test_autoencode_video_on_ray_splits_one_long_video_into_clip_ranges_and_assembles_its_outputs(
        local_ray, tmp_path, capsys, monkeypatch):
    from synthetic_media import write_video

    from perceiver_cli.tasks.autoencode import AutoencodeTask

    weights = tmp_path / "multimodal"
    make_tiny_checkpoint("multimodal", weights, num_frames=4, output_shape=[1, 4, 16, 16],
                         audio_samples_per_frame=1920)
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "long.mp4", 58, sound="garbage")  # its sound cannot be decoded: a warning
    inputs = [str(clips / "missing.mp4"), str(clips / "long.mp4")]  # a failed record beside the video
    split: list[int] = []
    listed = AutoencodeTask.segments

    def counted(task, count):
        segments = listed(task, count)
        split.append(len(segments or []))
        return segments

    monkeypatch.setattr(AutoencodeTask, "segments", counted)
    runs = {}
    for engine in ("local", "ray"):
        extra = ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"] if engine == "ray" else []
        code = main(["autoencode-video", *inputs, "-w", str(weights), "-o", f"{tmp_path / engine}/", "--format",
                     "mp4,wav,npz", "--json", *extra])
        out, err = capsys.readouterr()
        records = [json.loads(line) for line in out.splitlines()]
        runs[engine] = code, [{**r, "outputs": [Path(o).name for o in r.get("outputs", [])]} for r in records], \
            [line for line in err.splitlines() if line.startswith("perceiver: ")]
    assert any("warning" in line for line in runs["local"][2]) and any("error" in line for line in runs["local"][2])
    assert split[-1] > 2  # the long video went to the workers in several parts
    assert runs["ray"] == runs["local"] and runs["local"][0] == 1 and len(runs["local"][1]) == 2
    assert "error" in runs["local"][1][0] and len(runs["local"][1][1]["clips"]) == 15
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len(local) == 3
    for name in local:
        if name.endswith(".wav"):
            assert local[name] == remote[name]
        elif name.endswith(".npz"):  # an .npz stamps its write time in the zip: its arrays are compared
            with np.load(tmp_path / "local" / name) as mine, np.load(tmp_path / "ray" / name) as theirs:
                assert sorted(mine.files) == sorted(theirs.files)
                assert all(np.array_equal(mine[key], theirs[key]) for key in mine.files)
        else:
            mine, theirs = _video_frames(tmp_path / "local" / name), _video_frames(tmp_path / "ray" / name)
            assert len(mine) == len(theirs) > 0 and all(np.array_equal(a, b) for a, b in zip(mine, theirs))


NICENESS_OF_A_LOCAL_RUN = """
import os, sys
import ray
from perceiver_cli.tasks.engine import ScaleOptions
from perceiver_cli.tasks.ray_engine import _connect

assert _connect(ray, ScaleOptions(engine="ray"))
task = ray.remote(lambda: os.nice(0))
actor = ray.remote(type("Probe", (), {"nice": lambda self: os.nice(0)})).remote()
print(os.nice(0), ray.get(task.remote()), ray.get(actor.nice.remote()))
ray.shutdown()
"""


def test_the_local_cluster_of_a_run_works_at_the_command_s_priority():
    # Ray starts workers 15 nicer than the node by default: beside any other work the model workers starved.
    # A user's own RAY_worker_niceness is kept.
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    env.update(OMP_NUM_THREADS="1")
    for extra, expected in (({}, 0), ({"RAY_worker_niceness": "3"}, 3)):
        done = subprocess.run([sys.executable, "-c", NICENESS_OF_A_LOCAL_RUN], capture_output=True, text=True,
                              env={**env, **extra}, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        mine, task, actor = map(int, done.stdout.split())
        assert (task - mine, actor - mine) == (expected, expected), done.stdout


def test_ray_workers_results_are_packed_once_each_into_the_commands_parquet_files(local_ray, tmp_path, weights,
                                                                                  capsys):
    import pyarrow.parquet as pq

    folder = _photos(tmp_path / "photos", 7)
    manifest = tmp_path / "run.jsonl"
    code, _, _ = _classify(capsys, str(folder), "-w", str(weights), "--json", "-o", str(tmp_path / "out"), "--format",
                           "parquet", "--items-per-file", "3", "--engine", "ray", "--workers", "2",
                           "--cpus-per-worker", "1", "--manifest", str(manifest))
    assert code == 0
    shards = {str(p): pq.read_table(p, columns=["key"]).column("key").to_pylist()
              for p in sorted((tmp_path / "out").glob("part-*.parquet"))}
    assert sorted(key for keys in shards.values() for key in keys) == sorted(str(p) for p in folder.glob("*.png"))
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        assert record["input"] in shards[record["shard"]]
    assert ray.data.read_parquet(str(tmp_path / "out")).count() == 7  # the README's read-back line


def test_flow_on_ray_records_each_pairs_files_in_the_manifest(local_ray, tmp_path, capsys):
    weights = tmp_path / "flow"
    make_tiny_checkpoint("flow", weights)
    frames = _photos(tmp_path / "frames", 3, grow=0)
    out = tmp_path / "out"
    code, records = _run(capsys, "flow", str(frames), "-w", str(weights), "-o", f"{out}/", "--format", "flo,png",
                         "--json", "--manifest", str(tmp_path / "run.jsonl"), "--engine", "ray", "--workers", "1",
                         "--cpus-per-worker", "1")
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert sorted(line["outputs"] for line in lines) == [[str(out / f"{i:02d}.flo"), str(out / f"{i:02d}.png")]
                                                         for i in (0, 1)]


def test_flow_on_ray_splits_a_video_in_both_directions_and_assembles_backward_and_occlusion(local_ray, tmp_path,
                                                                                           capsys):
    from synthetic_media import write_video

    weights = tmp_path / "flow"
    make_tiny_checkpoint("flow", weights)
    clip = write_video(tmp_path / "clip.mp4", 6, sound=None)
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"] if engine == "ray" else []
        code, _ = _run(capsys, "flow", str(clip), "-w", str(weights), "--direction", "both", "-o",
                       str(out / "v.npy"), "--json", *extra)
        assert code == 0
    names = ("v.npy", "v_backward.npy", "v_occlusion.npy")
    assert sorted(_files(tmp_path / "ray")) == sorted(_files(tmp_path / "local")) == sorted(names)
    for name in names:
        assert np.array_equal(np.load(tmp_path / "ray" / name), np.load(tmp_path / "local" / name))
    assert np.load(tmp_path / "ray" / "v_occlusion.npy").shape[0] == 5


def test_features_of_one_video_split_over_workers_equal_the_local_engines(local_ray, tmp_path, capsys, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    from synthetic_media import write_video

    from perceiver_cli.tasks.autoencode import AutoencodeTask

    weights = tmp_path / "multimodal"
    make_tiny_checkpoint("multimodal", weights, num_frames=4, output_shape=[1, 4, 16, 16],
                         audio_samples_per_frame=1920)
    video = write_video(tmp_path / "long.mp4", 40, sound="tone")  # ten 4-frame clips
    split, listed = [], AutoencodeTask.segments
    monkeypatch.setattr(AutoencodeTask, "segments",
                        lambda task, count: split.append(len(listed(task, count) or [])) or listed(task, count))
    ray_options = ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"]
    for engine, extra in (("local", []), ("ray", ray_options)):
        for kind, formats in (("latents", "wav,parquet"), ("pooled", "wav")):
            code = main(["autoencode-video", str(video), "-w", str(weights), "-q", "-o", f"{tmp_path / engine}-{kind}/",
                         "--format", formats, "--features", kind, *extra])
            assert code == 0, capsys.readouterr().err
    assert split[-1] > 1  # the video went to the workers in parts
    local, remote = (pq.read_table(tmp_path / f"{engine}-latents" / "part-00000.parquet").to_pylist()[0]
                     for engine in ("local", "ray"))
    for name in ("features", "label_logits"):
        assert remote[f"{name}_shape"] == local[f"{name}_shape"] and local[f"{name}_shape"][0] == 10
        np.testing.assert_allclose(remote[name], local[name], rtol=0, atol=1e-6)
    pooled = [np.load(tmp_path / f"{engine}-pooled" / "long.features.npy") for engine in ("local", "ray")]
    assert pooled[0].shape[0] == 10
    np.testing.assert_allclose(pooled[1], pooled[0], rtol=0, atol=1e-6)
