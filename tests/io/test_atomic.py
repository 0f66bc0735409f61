"""Atomic writes and output-path checks: a user's file is never left half-written or overwritten by mistake."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.errors import UsageError
from perceiver_cli.io.atomic import atomic_write, atomic_write_path, prepare_output


class Boom(Exception):
    """Raised inside a with-block to simulate a failing writer."""


def folder_names(folder: Path) -> list[str]:
    """Everything in folder, hidden files included, sorted."""
    return sorted(os.listdir(folder))


def test_atomic_write_creates_the_target_with_the_written_bytes(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_write(target) as handle:
        handle.write(b"hello")
    assert target.read_bytes() == b"hello"
    assert folder_names(tmp_path) == ["out.bin"]


def test_atomic_write_uses_a_hidden_partial_file_in_the_same_folder(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_write(target) as handle:
        handle.write(b"data")
        names_during = folder_names(tmp_path)
        assert not target.exists()
    assert len(names_during) == 1
    assert names_during[0].startswith(".") and ".partial" in names_during[0]


def test_exception_in_block_keeps_old_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_write(target, "w") as handle:
            handle.write("half of the new")
            raise Boom()
    assert target.read_text() == "old"
    assert folder_names(tmp_path) == ["result.txt"]


def test_keyboard_interrupt_in_block_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as handle:
            handle.write(b"x" * 1000)
            raise KeyboardInterrupt
    assert folder_names(tmp_path) == []


def test_text_mode_passes_encoding_through(tmp_path: Path) -> None:
    target = tmp_path / "labels.txt"
    with atomic_write(target, "w", encoding="utf-8") as handle:
        handle.write("café\n")
    assert target.read_bytes() == "café\n".encode("utf-8")


def test_non_write_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x", "ab"):
            pass
    assert folder_names(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_new_file_gets_ordinary_permissions_not_private_ones(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "shared.bin") as handle:
            handle.write(b"1")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_replacing_a_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "private.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_atomic_write_path_keeps_the_extension_so_np_save_adds_nothing(tmp_path: Path) -> None:
    target = tmp_path / "latents.npy"
    with atomic_write_path(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".") and ".partial" in temporary.name
        assert temporary.name.endswith(".npy")
        np.save(temporary, np.arange(3))
    assert folder_names(tmp_path) == ["latents.npy"]
    assert np.load(target).tolist() == [0, 1, 2]


@pytest.mark.parametrize("error", [Boom(), KeyboardInterrupt()])
def test_atomic_write_path_removes_the_temporary_on_failure(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous video")
    with pytest.raises(type(error)):
        with atomic_write_path(target) as temporary:
            temporary.write_bytes(b"partial video")
            raise error
    assert target.read_bytes() == b"previous video"
    assert folder_names(tmp_path) == ["clip.mp4"]


def test_prepare_output_refuses_the_input_file_itself(tmp_path: Path) -> None:
    source = tmp_path / "frame.png"
    source.write_bytes(b"data")
    with pytest.raises(UsageError) as caught:
        prepare_output(source, [source])
    assert "same file" in str(caught.value) and "\n" not in str(caught.value)


def test_prepare_output_refuses_another_spelling_of_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    source = tmp_path / "a" / "frame.flo"
    source.write_bytes(b"data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError):
        prepare_output("a/../a/./frame.flo", [str(source)])


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_prepare_output_refuses_a_link_to_the_input(tmp_path: Path) -> None:
    source = tmp_path / "in.wav"
    source.write_bytes(b"data")
    link = tmp_path / "out.wav"
    link.symlink_to(source)
    with pytest.raises(UsageError):
        prepare_output(link, [source])


def test_prepare_output_accepts_a_different_file_and_creates_missing_folders(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(b"data")
    target = tmp_path / "results" / "run1" / "out.png"
    assert prepare_output(target, [source]) == target
    assert target.parent.is_dir()
    assert folder_names(target.parent) == []


def test_prepare_output_refuses_a_folder_as_output(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        prepare_output(tmp_path, [])


def test_prepare_output_reports_a_file_in_place_of_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(UsageError) as caught:
        prepare_output(blocker / "sub" / "out.png", [])
    assert "\n" not in str(caught.value)


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in, or skip the test."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    if Path("/proc/self").is_dir():
        return Path("/proc")  # even root cannot create files in procfs
    pytest.skip("no folder is unwritable for this user")


def test_prepare_output_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    folder = _unwritable_folder(tmp_path)
    try:
        with pytest.raises(UsageError) as caught:
            prepare_output(folder / "out.png", [])
        assert str(folder) in str(caught.value) and "\n" not in str(caught.value)
    finally:
        if folder.parent == tmp_path:
            folder.chmod(0o755)


def test_atomic_write_into_an_unwritable_folder_is_a_usage_error(tmp_path: Path) -> None:
    folder = _unwritable_folder(tmp_path)
    try:
        with pytest.raises(UsageError):
            with atomic_write(folder / "out.bin") as handle:
                handle.write(b"x")
    finally:
        if folder.parent == tmp_path:
            folder.chmod(0o755)
