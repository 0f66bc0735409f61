"""Video display rotation, frame ranges, stepped pairs, and the .avi/.mkv/.gif writers (clips made here with PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.errors import UsageError
from perceiver_cli.io.video import (
    ALL_VIDEO_OUTPUTS,
    SUPPORTED_VIDEO_OUTPUTS,
    VideoWriter,
    iter_clips,
    iter_timed_frames,
    probe_video,
    stepped_pairs,
)
from synthetic_media import iter_frames, write_frames

STORED_HEIGHT, STORED_WIDTH = 32, 64


def asymmetric_picture(level: int = 0) -> np.ndarray:
    """A stored 32x64 picture with a white block in its top-left corner and a grey band on its right edge."""
    picture = np.full((STORED_HEIGHT, STORED_WIDTH, 3), level, np.uint8)
    picture[:12, :20] = 255
    picture[:, -8:] = 128
    return picture


def write_clip(path: Path, n_frames: int = 4, fps: int = 10, display_rotation: int | None = None,
               rotate_tag: str | None = None, levels: list[int] | None = None) -> Path:
    """Encode the asymmetric picture with lossless H.264, optionally with rotation metadata."""
    pictures = [asymmetric_picture(levels[i] if levels else 0) for i in range(n_frames)]
    return write_frames(path, pictures, fps=fps, display_rotation=display_rotation, rotate_tag=rotate_tag)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < 4


def test_an_unrotated_clip_comes_out_as_stored(tmp_path):
    path = write_clip(tmp_path / "plain.mp4")
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (STORED_WIDTH, STORED_HEIGHT, 0)
    assert _close(next(iter_frames(path)), asymmetric_picture())


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_a_portrait_phone_clip_comes_out_portrait(tmp_path, suffix):
    # A display rotation of 90 degrees counter-clockwise: ffmpeg's own autorotation shows the stored
    # picture turned a quarter to the left, so its top-left white block ends up bottom-left.
    path = write_clip(tmp_path / f"phone{suffix}", display_rotation=90)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (STORED_HEIGHT, STORED_WIDTH, 90)
    frame = next(iter_frames(path))
    assert frame.shape == (STORED_WIDTH, STORED_HEIGHT, 3)
    assert frame[-1, 0].min() > 200 and frame[0, 0].max() < 200  # white block now bottom-left
    assert frame[:8, :, 0].mean() == pytest.approx(128, abs=4)  # the right-edge band is now on top
    assert _close(frame, np.rot90(asymmetric_picture(), 1))


def test_a_clockwise_display_rotation_turns_the_other_way(tmp_path):
    path = write_clip(tmp_path / "cw.mp4", display_rotation=-90)
    assert probe_video(path).rotation == 270
    frame = next(iter_frames(path))
    assert frame[0, -1].min() > 200  # top-left block now top-right
    assert _close(frame, np.rot90(asymmetric_picture(), -1))


def test_a_legacy_rotate_tag_counts_clockwise(tmp_path):
    # Matroska keeps arbitrary stream tags, so this writes the old 'rotate' tag without a display matrix.
    path = write_clip(tmp_path / "legacy.mkv", rotate_tag="90")
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (STORED_HEIGHT, STORED_WIDTH, 270)
    assert _close(next(iter_frames(path)), np.rot90(asymmetric_picture(), -1))


def test_model_clips_are_cut_from_the_displayed_picture(tmp_path):
    path = write_clip(tmp_path / "phone.mp4", n_frames=2, display_rotation=90)
    clip = next(iter(iter_clips(path, frames_per_clip=2, fps=10, size=32, on_warning=lambda m: None)))
    # The centre square of the displayed 32x64 (W x H) picture is rows 16..48 of the turned frame.
    expected = np.rot90(asymmetric_picture(), 1)[16:48].astype(np.float32) / 255
    assert np.abs(clip.frames[0] - expected).mean() < 0.02


def test_a_time_range_keeps_frames_from_start_up_to_end(tmp_path):
    levels = [0, 40, 80, 120, 160, 200]
    path = write_clip(tmp_path / "ramp.mp4", n_frames=6, fps=10, levels=levels)
    timed = list(iter_timed_frames(path, start_s=0.2, end_s=0.45))
    assert [round(t, 3) for t, _ in timed] == [0.2, 0.3, 0.4]
    assert [int(round(f[20, 30, 0])) for _, f in timed] == pytest.approx([80, 120, 160], abs=3)
    assert len(list(iter_frames(path, start_s=0.35))) == 2
    assert len(list(iter_frames(path))) == 6


@pytest.mark.parametrize("start, end", [(-1, None), (None, float("inf")), (0.5, 0.5)])
def test_a_bad_time_range_is_a_usage_error(tmp_path, start, end):
    path = write_clip(tmp_path / "c.mp4")
    with pytest.raises(UsageError):
        list(iter_frames(path, start_s=start, end_s=end))


def test_stepped_pairs_pair_t_with_t_plus_k():
    assert list(stepped_pairs("abcde", 2)) == [(0, "a", "c"), (1, "b", "d"), (2, "c", "e")]
    assert list(stepped_pairs("abc")) == [(0, "a", "b"), (1, "b", "c")]
    assert list(stepped_pairs("a", 1)) == []
    with pytest.raises(UsageError):
        list(stepped_pairs("abc", 0))


def _stripes(shift: int) -> np.ndarray:
    picture = np.zeros((32, 48, 3), np.uint8)
    picture[:, :16] = (255, 0, 0)
    picture[:, 16:32] = (10, 200, 30)
    picture[:, 32:] = (40, 60, 250)
    return np.roll(picture, shift, axis=1)


@pytest.mark.parametrize("suffix, tolerance", [(".avi", 6.0), (".mkv", 6.0), (".gif", 0.0)])
def test_video_outputs_round_trip(tmp_path, suffix, tolerance):
    path = tmp_path / f"flow{suffix}"
    frames = [_stripes(4 * i) for i in range(5)]
    with VideoWriter(path, fps=10, width=48, height=32) as writer:
        for frame in frames:
            writer.write_frame(frame)
    back = list(iter_frames(path))
    assert len(back) == 5
    for got, want in zip(back, frames):
        assert got.shape == want.shape
        assert float(np.abs(got.astype(int) - want.astype(int)).mean()) <= tolerance
    info = probe_video(path)
    assert (info.width, info.height) == (48, 32) and info.fps == pytest.approx(10)


def test_avi_keeps_sound_and_gif_refuses_it(tmp_path):
    with VideoWriter(tmp_path / "a.avi", fps=10, width=16, height=16, audio_sample_rate=16000) as writer:
        writer.write_frame(np.zeros((16, 16, 3), np.uint8))
        writer.write_audio(np.zeros(1600, np.float32))
    assert probe_video(tmp_path / "a.avi").audio_sample_rate == 16000
    with pytest.raises(UsageError, match="no sound"):
        VideoWriter(tmp_path / "b.gif", fps=10, width=16, height=16, audio_sample_rate=16000)
    assert ".avi" in SUPPORTED_VIDEO_OUTPUTS and ".gif" not in SUPPORTED_VIDEO_OUTPUTS
    assert ".gif" in ALL_VIDEO_OUTPUTS


def test_rotation_agrees_with_ffmpegs_own_autorotation(tmp_path):
    import subprocess

    import imageio_ffmpeg  # the [test] extra installs it

    from perceiver_cli.io.images import read_image

    path = write_clip(tmp_path / "phone.mp4", display_rotation=90)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                    str(tmp_path / "ffmpeg.png")], check=True)
    assert _close(next(iter_frames(path)), read_image(tmp_path / "ffmpeg.png"))
