"""WAV and .npz writers (PSNR is tested in tests/test_metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from perceiver_cli.io.audio import write_npz, write_wav


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
