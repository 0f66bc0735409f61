"""WAV and .npz writers and the PSNR helper."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from perceiver_cli.io.audio import psnr, write_npz, write_wav


def test_wav_is_16_bit_pcm_by_default_and_round_trips(tmp_path):
    path = tmp_path / "tone.wav"
    samples = (0.5 * np.sin(np.arange(4800) * 0.05)).astype(np.float32)
    write_wav(path, samples, 48000)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (48000, 1, "PCM_16", "WAV")
    back, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 48000 and back.shape == samples.shape
    assert np.abs(back - samples).max() <= 1.5 / 32768
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tone.wav"]


def test_wav_pcm_clips_out_of_range_samples(tmp_path):
    path = tmp_path / "loud.wav"
    write_wav(path, np.array([2.0, -3.0, 0.25], np.float32), 8000)
    back, _ = soundfile.read(str(path), dtype="float32")
    assert back == pytest.approx([32767 / 32768, -1.0, 0.25], abs=1e-4)


def test_wav_float_subtype_keeps_samples_exactly(tmp_path):
    path = tmp_path / "exact.wav"
    samples = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    write_wav(path, samples, 16000, subtype="FLOAT")
    back, _ = soundfile.read(str(path), dtype="float32")
    assert soundfile.info(str(path)).subtype == "FLOAT"
    assert np.array_equal(back, samples)


def test_wav_refuses_stereo_without_writing(tmp_path):
    path = tmp_path / "stereo.wav"
    with pytest.raises(ValueError, match="mono"):
        write_wav(path, np.zeros((100, 2), np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_wav_write_interrupted_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    path.write_bytes(b"older")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_wav(path, np.zeros(10, np.float32), 16000)
    assert path.read_bytes() == b"older"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_npz_round_trips_named_arrays(tmp_path):
    path = tmp_path / "result.npz"
    flow = np.random.default_rng(1).normal(size=(4, 5, 2)).astype(np.float32)
    write_npz(path, flow=flow, path=np.arange(3))  # an array may be called "path"
    with np.load(path) as archive:
        assert sorted(archive.files) == ["flow", "path"]
        assert np.array_equal(archive["flow"], flow) and archive["flow"].dtype == np.float32
        assert np.array_equal(archive["path"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.npz"]


def test_psnr_is_infinite_for_equal_arrays():
    a = np.linspace(0, 1, 50, dtype=np.float32)
    assert psnr(a, a.copy()) == float("inf")


def test_psnr_matches_the_definition():
    a = np.zeros((4, 4), np.float32)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # mse 0.01 -> 10 log10(1 / 0.01)
    assert psnr(a, a + 25.5, data_range=255.0) == pytest.approx(20.0, abs=1e-4)


def test_psnr_refuses_different_shapes():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros(3), np.zeros(4))
