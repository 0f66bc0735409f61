"""Decoder chunks shared out between single-threaded workers (core.trunk.run_chunks)."""

from __future__ import annotations

import threading

import pytest
import torch

from perceiver_cli.load import load_model
from perceiver_cli.core.autoencode import decode_clip
from perceiver_cli.core.trunk import run_chunks
from tiny_models import make_tiny_checkpoint

CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_results_in_order_from_two_workers_and_threads_restored(two_threads):
    seen_threads, seen_counts = set(), set()
    gate = threading.Barrier(2, timeout=10)

    def square(i: int) -> int:
        seen_threads.add(threading.get_ident())
        seen_counts.add(torch.get_num_threads())
        if i < 2:
            gate.wait()  # the first two chunks can only finish if they run at the same time
        return i * i

    assert run_chunks(square, range(20), CPU) == [i * i for i in range(20)]
    assert len(seen_threads) == 2 and seen_counts == {1}
    assert torch.get_num_threads() == 2


def test_serial_with_one_thread_or_one_chunk():
    torch.set_num_threads(1)
    main = threading.get_ident()
    assert run_chunks(lambda i: threading.get_ident() == main, range(5), CPU) == [True] * 5


def test_error_propagates_and_threads_restored(two_threads):
    def fail(i: int) -> int:
        if i == 3:
            raise RuntimeError("chunk 3 failed")
        return i

    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        run_chunks(fail, range(50), CPU)
    assert torch.get_num_threads() == 2


def test_workers_inherit_inference_mode(two_threads):
    with torch.inference_mode():
        outs = run_chunks(lambda i: torch.ones(2) * i, range(4), CPU)
    assert all(t.is_inference() for t in outs)
    with torch.no_grad():
        outs = run_chunks(lambda i: torch.ones(2, requires_grad=True) * i, range(4), CPU)
    assert not any(t.is_inference() or t.requires_grad for t in outs)


@torch.no_grad()
def test_multimodal_decoding_in_workers_equals_serial(tmp_path, two_threads):
    make_tiny_checkpoint("multimodal", tmp_path / "m")
    model = load_model(str(tmp_path / "m"), device="cpu", numerics="transformers")
    torch.manual_seed(0)
    images, audio = torch.rand(1, 2, 3, 16, 16), torch.rand(1, 64) * 2 - 1
    z = model.encode(images, audio)
    parallel = decode_clip(model, z, chunk_size=19)
    torch.set_num_threads(1)
    serial = decode_clip(model, z, chunk_size=19)
    for key in serial:
        assert (parallel[key] - serial[key]).abs().max().item() <= 1e-6
