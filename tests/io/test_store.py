"""Inputs and outputs on an object store: a real S3-protocol server (moto) on the loopback interface, talked to by
the real s3fs/botocore clients over HTTP through AWS_ENDPOINT_URL. Reading whole objects and ranges, listing
prefixes in few requests and in the local walk's order, globs, atomic outputs that appear complete or not at
all (exceptions, Ctrl-C, a server that goes away, SIGKILL), the parts log of a manifest, and each store
failure's one-line message."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from perceiver_cli.errors import InputError, UsageError  # noqa: E402
from perceiver_cli.io import inputs, location, store, store_write  # noqa: E402
from perceiver_cli.io.store_parts import PartLog  # noqa: E402
from s3_server import (HINT, Bucket, S3Server, authenticating, fresh_bucket, seed_objects,  # noqa: E402,F401
                       use_endpoint)

IMAGES = (".jpg", ".png")
MiB = 2**20


@pytest.fixture(scope="module")
def server():
    s3 = S3Server()
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture
def bucket(server, monkeypatch, tmp_path):
    with fresh_bucket(server, monkeypatch, tmp_path, spool=tmp_path) as made:
        server.requests.clear()
        yield made


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob(".perceiver-spool.*"))


# Reading


def test_reads_a_whole_object_and_a_range_without_fetching_the_rest(bucket):
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB
    bucket.put("clips/a.bin", data)
    assert store.read_bytes(bucket.url("clips/a.bin")) == data
    bucket.server.requests.clear()
    with store.open_input(bucket.url("clips/a.bin")) as handle:
        assert handle.seekable()
        handle.seek(2_500_000)
        assert handle.read(100) == data[2_500_000:2_500_100]
    gets = [request for request in bucket.server.requests if request[0] == "GET"]
    assert gets and all(request[3] is not None for request in gets)
    fetched = sum(int(b) - int(a) + 1 for a, b in (r[3].removeprefix("bytes=").split("-") for r in gets))
    assert fetched < len(data)


def test_a_video_decodes_from_the_store_as_from_the_local_file(bucket, tmp_path):
    av = pytest.importorskip("av")
    import numpy as np
    from synthetic_media import write_video

    clip = write_video(tmp_path / "clip.mp4", n_frames=12, width=32, height=24)
    bucket.put("clips/clip.mp4", clip.read_bytes())

    def frames(source):
        with av.open(source) as container:
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]

    with store.open_input(bucket.url("clips/clip.mp4")) as remote:
        streamed = frames(remote)
    local = frames(str(clip))
    assert len(streamed) == len(local) == 12
    assert all(np.array_equal(a, b) for a, b in zip(streamed, local))


def test_web_urls_are_read_and_a_missing_one_fails_the_item(tmp_path):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "cat.jpg").write_bytes(b"not really a jpeg")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{web.server_address[1]}"
        try:
            assert store.read_bytes(f"{base}/cat.jpg") == b"not really a jpeg"
            assert store.expand_inputs([f"{base}/cat.jpg?size=large"], IMAGES, "image") == [f"{base}/cat.jpg?size=large"]
            with pytest.raises(InputError) as caught:
                store.read_bytes(f"{base}/dog.jpg")
            assert str(caught.value) == f"{base}/dog.jpg: no such file or folder"
        finally:
            web.shutdown()
            location.forget_filesystems()


def _read_in_child(url: str) -> bytes:
    return store.read_bytes(url)


def test_a_forked_worker_reads_with_its_own_connections(bucket):
    import multiprocessing

    bucket.put("a.jpg", b"forked")
    assert store.read_bytes(bucket.url("a.jpg")) == b"forked"  # the parent's client exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_read_in_child, (bucket.url("a.jpg"),)).get(timeout=60) == b"forked"


def test_lists_a_prefix_of_2000_objects_with_one_paginated_listing(bucket):
    keys = [f"many/{number:05d}.jpg" for number in range(2000)]
    seed_objects(bucket.name, keys + ["many/.hidden.jpg", "many/notes.txt"])
    bucket.server.requests.clear()
    found = store.files_under(bucket.url("many"), IMAGES)
    assert found == [bucket.url(key) for key in keys]
    # 2002 keys at 1000 a page: three listing requests, never one per object
    assert len(bucket.server.requests) <= 3
    assert all("list-type=2" in request[2] for request in bucket.server.requests)


TREE = ["top.png", "Z.JPG", "readme.txt", "a/x.jpg", "a/.hid.jpg", "a/sub2.jpg", "a/sub/deep.jpg",
        "a/sub/deeper/d.png", ".git/h.jpg", "b/only.txt", "b/c/e.jpg"]


def make_tree(root: Path, bucket: Bucket) -> None:
    for name in TREE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
        bucket.put(f"tree/{name}", name.encode())


def relative_local(items, root: Path) -> list[str]:
    return [item.relative_to(root).as_posix() for item in items]


def relative_remote(items, bucket: Bucket) -> list[str]:
    return [item.removeprefix(bucket.url("tree/")) for item in items]


def test_a_prefix_expands_to_the_files_and_order_of_the_same_local_folder(bucket, tmp_path):
    make_tree(tmp_path / "tree", bucket)
    local = inputs.expand_inputs([str(tmp_path / "tree")], IMAGES, "image")
    remote = store.expand_inputs([bucket.url("tree")], IMAGES, "image")
    assert relative_remote(remote, bucket) == relative_local(local, tmp_path / "tree")
    order = relative_remote(remote, bucket)
    assert order.index("a/sub2.jpg") < order.index("a/sub/deep.jpg")  # a folder's files first: not key order


@pytest.mark.parametrize("pattern", ["a/*.jpg", "**/*.jpg", "*", "a/sub*"])
def test_a_glob_matches_what_the_local_glob_matches(bucket, tmp_path, pattern):
    make_tree(tmp_path / "tree", bucket)
    local = inputs.expand_inputs([str(tmp_path / "tree" / pattern)], IMAGES, "image")
    remote = store.expand_inputs([bucket.url(f"tree/{pattern}")], IMAGES, "image")
    assert relative_remote(remote, bucket) == relative_local(local, tmp_path / "tree")


def test_local_paths_file_urls_and_store_urls_mix_in_one_expansion(bucket, tmp_path):
    make_tree(tmp_path / "tree", bucket)
    items = store.expand_inputs([str(tmp_path / "tree" / "top.png"), (tmp_path / "tree" / "a").as_uri(),
                                 bucket.url("tree/b"), bucket.url("tree/b/c/e.jpg")], IMAGES, "image")
    assert items == [tmp_path / "tree" / "top.png", tmp_path / "tree" / "a" / "sub2.jpg",
                     tmp_path / "tree" / "a" / "x.jpg", tmp_path / "tree" / "a" / "sub" / "deep.jpg",
                     tmp_path / "tree" / "a" / "sub" / "deeper" / "d.png", bucket.url("tree/b/c/e.jpg")]


def test_arguments_that_stand_for_no_file_each_give_one_input_error(bucket, tmp_path):
    make_tree(tmp_path / "tree", bucket)
    items = store.expand_inputs([bucket.url("tree/nothing"), bucket.url("tree/b/only.txt"), bucket.url("tree/b/"),
                                 bucket.url("tree/*.gif")], IMAGES, "image")
    assert [str(item) for item in items] == [
        f"{bucket.url('tree/nothing')}: no such file or folder",
        bucket.url("tree/b/only.txt"),  # a file named on its own is kept whatever its extension
        bucket.url("tree/b/c/e.jpg"),
        f"{bucket.url('tree/*.gif')}: pattern matches no image files",
    ]
    assert isinstance(items[0], InputError) and isinstance(items[3], InputError)
    bucket.put("docs/readme.txt", b"")
    empty = store.expand_inputs([bucket.url("docs")], IMAGES, "image")
    assert [str(item) for item in empty] == [f"{bucket.url('docs')}: folder holds no image files (.jpg, .png)"]


# Atomic writes


def test_an_output_appears_only_when_the_block_ends(bucket, tmp_path):
    with store_write.atomic_write(bucket.url("out/r.json"), "w", encoding="utf-8") as handle:
        handle.write('{"label": "tabby"}')
        assert bucket.keys() == []  # nothing on the store while the block runs, not even a temporary object
    assert bucket.keys() == ["out/r.json"]
    assert bucket.get("out/r.json") == b'{"label": "tabby"}'
    with store_write.atomic_write_path(bucket.url("out/a.npy")) as path:
        assert path.suffix == ".npy"
        path.write_bytes(b"\x93NUMPY")
    assert bucket.get("out/a.npy") == b"\x93NUMPY"
    assert bucket.keys() == ["out/a.npy", "out/r.json"] and spool_files(tmp_path) == []


def test_a_large_output_is_a_multipart_upload_completed_at_the_end(bucket, monkeypatch):
    monkeypatch.setattr(store_write, "SINGLE_PUT_BYTES", 1)
    monkeypatch.setattr(store_write, "PART_BYTES", 5 * MiB)
    data = bytes(range(256)) * (44 * 1024)  # 11 MiB: three parts
    with store_write.atomic_write(bucket.url("out/big.bin")) as handle:
        handle.write(data)
    parts = [r for r in bucket.server.requests if r[0] == "PUT" and "partNumber=" in r[2]]
    assert len(parts) == 3
    assert bucket.get("out/big.bin") == data and bucket.uploads() == []


@pytest.mark.parametrize("failure", [RuntimeError("decoder failed"), KeyboardInterrupt()])
def test_a_block_that_raises_leaves_the_old_object_and_no_new_one(bucket, tmp_path, failure):
    bucket.put("out/kept.txt", b"old")
    bucket.server.requests.clear()
    for key in ("out/kept.txt", "out/new.txt"):
        with pytest.raises(type(failure)):
            with store_write.atomic_write(bucket.url(key)) as handle:
                handle.write(b"new, half written")
                raise failure
    assert bucket.keys() == ["out/kept.txt"] and bucket.get("out/kept.txt") == b"old"
    assert bucket.uploads() == [] and spool_files(tmp_path) == []
    assert not [r for r in bucket.server.requests if r[0] in ("PUT", "POST")]


def test_ctrl_c_during_a_multipart_upload_aborts_it(bucket, monkeypatch):
    monkeypatch.setattr(store_write, "SINGLE_PUT_BYTES", 1)
    monkeypatch.setattr(store_write, "PART_BYTES", 5 * MiB)

    def interrupt(method, path, query):
        if method == "PUT" and "partNumber=2" in query:
            os.kill(os.getpid(), signal.SIGINT)

    bucket.server.hook = interrupt
    with pytest.raises(KeyboardInterrupt):
        with store_write.atomic_write(bucket.url("out/big.bin")) as handle:
            handle.write(b"v" * (11 * MiB))
    bucket.server.hook = None
    assert bucket.keys() == [] and bucket.uploads() == []


def test_a_server_that_goes_away_mid_upload_leaves_no_object(bucket, monkeypatch):
    monkeypatch.setattr(store_write, "SINGLE_PUT_BYTES", 1)
    monkeypatch.setattr(store_write, "PART_BYTES", 5 * MiB)
    server = bucket.server

    def go_away(method, path, query):
        if method == "PUT" and "partNumber=1" in query:
            server.halt()

    server.hook = go_away
    target = bucket.url("out/big.bin")
    with pytest.raises(UsageError) as caught:
        with store_write.atomic_write(target) as handle:
            handle.write(b"v" * (11 * MiB))
    assert str(caught.value) == f"{target}: cannot reach the store at {server.endpoint}"
    server.hook = None
    server.start()
    assert bucket.keys() == []
    assert bucket.uploads() == ["out/big.bin"]  # the abort could not reach the store either: invisible, left over
    assert store_write.abort_unfinished_uploads(bucket.url("out/"), older_than=timedelta(0)) == 1
    assert bucket.uploads() == []


CHILD_UPLOAD = """
import sys
from perceiver_cli.io import store_write
store_write.SINGLE_PUT_BYTES, store_write.PART_BYTES = 1, 5 * 2**20
with store_write.atomic_write(sys.argv[1]) as handle:
    handle.write(b"v" * (11 * 2**20))
"""


def test_a_process_killed_mid_upload_leaves_nothing_at_the_final_key(bucket):
    arrived, release = threading.Event(), threading.Event()

    def hold(method, path, query):
        if method == "PUT" and "partNumber=2" in query:
            arrived.set()
            release.wait(30)

    bucket.server.hook = hold
    child = subprocess.Popen([sys.executable, "-c", CHILD_UPLOAD, bucket.url("out/big.bin")])
    try:
        assert arrived.wait(60), "the child never reached its second part"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        release.set()
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert bucket.keys() == []


# The parts log of a manifest


def key(record: dict) -> str:
    return str(record.get("key", record["input"]))


CHILD_PARTS = """
import os, signal, sys
from perceiver_cli.io.store_parts import PartLog
log = PartLog(sys.argv[1], key=lambda r: r["input"], every_records=3, background=False)
for number in range(1, 9):
    log.append({"input": f"img{number}.jpg", "status": "failed" if number == 2 else "ok"})
os.kill(os.getpid(), signal.SIGKILL)  # with img7 and img8 buffered, not yet committed
"""


def test_parts_survive_a_kill_and_a_resumed_run_records_each_item_once(bucket):
    log_url = bucket.url("runs/manifest")
    child = subprocess.run([sys.executable, "-c", CHILD_PARTS, log_url], timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert len(bucket.keys()) == 2  # two whole parts; the buffer died with the process
    resumed = PartLog(log_url, key=key, every_records=100, background=False)
    before = resumed.read_all()
    assert [r["input"] for r in before] == [f"img{n}.jpg" for n in range(1, 7)]
    for number in (2, 7, 8, 9):  # the failed item retried, and those the kill lost
        resumed.append({"input": f"img{number}.jpg", "status": "ok"})
    resumed.close()
    after = PartLog(log_url, key=key, background=False).read_all()
    assert sorted(r["input"] for r in after) == [f"img{n}.jpg" for n in range(1, 10)]
    assert all(r["status"] == "ok" for r in after)
    compacting = PartLog(log_url, key=key, background=False)
    compacting.compact()
    assert len(bucket.keys()) == 1 and compacting.read_all() == after


def test_parts_are_committed_in_the_background_between_records(bucket):
    log = PartLog(bucket.url("runs/m"), key=key, every_s=0.05, every_records=1000)
    log.append({"input": "a.jpg", "status": "ok"})
    for _ in range(400):
        if bucket.keys():
            break
        threading.Event().wait(0.05)
    log.close()
    assert [r["input"] for r in PartLog(bucket.url("runs/m"), key=key, background=False).read_all()] == ["a.jpg"]
    assert len(bucket.keys()) == 1


def test_a_parts_log_works_the_same_in_a_local_folder(tmp_path):
    log = PartLog(tmp_path / "manifest", key=key, every_records=2, background=False)
    for name, status in [("a.jpg", "failed"), ("b.jpg", "ok"), ("a.jpg", "ok")]:
        log.append({"input": name, "status": status})
    log.close()
    assert len(list((tmp_path / "manifest").glob("part-*.jsonl"))) == 2
    assert not list((tmp_path / "manifest").glob(".*"))  # no temporary file left beside the parts
    records = PartLog(tmp_path / "manifest", key=key, background=False).read_all()
    assert records == [{"input": "b.jpg", "status": "ok"}, {"input": "a.jpg", "status": "ok"}]


def test_a_part_that_holds_no_records_is_a_usage_error(bucket):
    bucket.put("runs/m/part-1.jsonl", b'{"input": "a.jpg"}\nnot json\n')
    with pytest.raises(UsageError) as caught:
        PartLog(bucket.url("runs/m"), key=key, background=False).read_all()
    assert str(caught.value) == f"{bucket.url('runs/m/part-1.jsonl')}: line 2 is not a record"


# Errors, one line each


def test_a_missing_key_fails_the_item(bucket):
    url = bucket.url("photos/nope.jpg")
    for read in (store.read_bytes, store.open_input):
        with pytest.raises(InputError) as caught:
            read(url)
        assert str(caught.value) == f"{url}: no such file or folder"


def test_a_missing_bucket_is_a_usage_error(bucket):
    url = f"s3://{bucket.name}-gone/photos/a.jpg"
    for call in (lambda: store.read_bytes(url), lambda: store.expand_inputs([f"s3://{bucket.name}-gone/photos"],
                                                                            IMAGES, "image")):
        with pytest.raises(UsageError) as caught:
            call()
        assert str(caught.value).endswith(f": bucket {bucket.name}-gone does not exist")


def test_access_denied_fails_the_item(bucket, authenticating, monkeypatch):
    url = bucket.url("a.jpg")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", authenticating["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", authenticating["SecretAccessKey"])
    location.forget_filesystems()
    with pytest.raises(InputError) as caught:
        store.read_bytes(url)
    assert str(caught.value) == f"{url}: access denied (403)"


@pytest.mark.parametrize("wrong, code", [("key", "InvalidAccessKeyId"), ("secret", "SignatureDoesNotMatch")])
def test_rejected_credentials_are_a_usage_error(bucket, authenticating, monkeypatch, wrong, code):
    url = bucket.url("a.jpg")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN00000" if wrong == "key" else authenticating["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" if wrong == "secret" else authenticating["SecretAccessKey"])
    location.forget_filesystems()
    with pytest.raises(UsageError) as caught:
        store.read_bytes(url)
    assert str(caught.value) == f"{url}: the store rejected the credentials ({code}); check {HINT}"


def test_no_credentials_is_a_usage_error(bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    location.forget_filesystems()
    url = bucket.url("a.jpg")
    with pytest.raises(UsageError) as caught:
        store.read_bytes(url)
    assert str(caught.value) == f"{url}: no credentials found; set {HINT}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_is_a_usage_error(monkeypatch, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    use_endpoint(monkeypatch, endpoint, tmp_path)
    monkeypatch.setattr(location, "TIMEOUTS", location.Timeouts(connect_s=1, read_s=1, attempts=2))
    with pytest.raises(UsageError) as caught:
        store.read_bytes("s3://bkt-any/a.jpg")
    assert str(caught.value) == f"s3://bkt-any/a.jpg: cannot reach the store at {endpoint}"
    location.forget_filesystems()


def test_a_store_that_stops_answering_fails_the_item_within_the_bounded_wait(monkeypatch, tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        use_endpoint(monkeypatch, endpoint, tmp_path)
        monkeypatch.setattr(location, "TIMEOUTS", location.Timeouts(connect_s=1, read_s=1, attempts=2))
        with pytest.raises(InputError) as caught:
            store.read_bytes("s3://bkt-any/a.jpg")
        with pytest.raises(UsageError) as on_write:
            with store_write.atomic_write("s3://bkt-any/out.txt") as handle:
                handle.write(b"x")
    location.forget_filesystems()
    assert str(caught.value) == f"s3://bkt-any/a.jpg: the store at {endpoint} did not answer within 1 s (2 attempts)"
    assert str(on_write.value) == f"s3://bkt-any/out.txt: the store at {endpoint} did not answer within 1 s (2 attempts)"


def test_a_url_whose_driver_is_missing_names_the_extra():
    if location.importlib.util.find_spec("adlfs") is not None:
        pytest.skip("adlfs is installed here")
    with pytest.raises(UsageError) as caught:
        store.read_bytes("az://container/a.jpg")
    assert str(caught.value) == "az://container/a.jpg: az:// locations need the adlfs package: " \
                                "pip install 'perceiver-cli[cloud]'"


def test_web_urls_are_read_only_and_unknown_schemes_are_refused():
    with pytest.raises(UsageError) as caught:
        with store_write.atomic_write("https://example.invalid/out.json"):
            pass
    assert str(caught.value) == "https://example.invalid/out.json: https:// locations can be read, not written"
    with pytest.raises(UsageError) as unknown:
        store.read_bytes("ftp://host/a.jpg")
    assert str(unknown.value).startswith("ftp://host/a.jpg: unsupported location scheme ftp:// (local paths, file://")


# Local runs stay as they were


def test_local_locations_never_import_the_store_drivers(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from perceiver_cli.io import store, store_write, store_parts, store_errors, location
        folder = {str(tmp_path)!r}
        with store_write.atomic_write(folder + "/a.jpg") as handle:
            handle.write(b"x")
        assert store.read_bytes(folder + "/a.jpg") == b"x"
        assert [str(p) for p in store.expand_inputs([folder], [".jpg"], "image")] == [folder + "/a.jpg"]
        print(sorted(m for m in ("fsspec", "s3fs", "botocore", "aiohttp", "torch") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "a.jpg").read_bytes() == b"x"
