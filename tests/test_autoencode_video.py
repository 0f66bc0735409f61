"""`perceiver autoencode-video`, its task and core.autoencode: parity with transformers, chunking, trimming,
files, several videos per run.

The real clips are tests/data/video (see tests/data/README.md); every other video is made here with PyAV.
The checkpoint is a tiny random one with 4 frames of 16x16 a clip and 1920 audio samples a frame, so
sound runs at the real model's 48 kHz while each clip costs little.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch

from perceiver_cli.cli import main
from perceiver_cli.core import spec_from_config
from perceiver_cli.load import load_model
from perceiver_cli.core import autoencode as core_autoencode
from perceiver_cli.core.autoencode import RunningSummary, clip_geometry, decode_clip
from perceiver_cli.core.models import DEFAULT_CHUNK_SIZE, MultimodalAutoencoder
from perceiver_cli.errors import UsageError
from perceiver_cli.io.video import iter_clips
from synthetic_media import write_frames, write_sound_only, write_video
from tiny_models import make_tiny_checkpoint

DATA = Path(__file__).resolve().parent / "data" / "video"
AVI = DATA / "ucf101_applyeyemakeup.avi"  # 25 fps, 164 frames, 6.56 s, MP3 44.1 kHz
MP4 = DATA / "moviepy_example3.mp4"  # 24 fps, 48 frames, 2.0 s
T, SIZE, SPF, RATE = 4, 16, 1920, 48000  # the tiny checkpoint's clip; RATE is 25 fps x SPF
TINY = dict(num_frames=T, output_shape=[1, T, SIZE, SIZE], audio_samples_per_frame=SPF)
SHIPPED_KINETICS = Path(__file__).resolve().parents[1] / "perceiver_cli" / "data" / "kinetics700.txt"
CPU = torch.device("cpu")


def autoencode_clip(model, frames, audio, n_valid_frames=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """core.autoencode.autoencode_clip on the CPU in float32, as the tests' models are."""
    return core_autoencode.autoencode_clip(model, frames, audio, n_valid_frames, chunk_size, device=CPU,
                                           dtype=torch.float32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's operations are too small to share between threads; on a busy machine two threads
    wait on each other for most of each call, which made these tests several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint directory, transformers model) of the tiny multimodal autoencoder."""
    directory = tmp_path_factory.mktemp("tiny") / "multimodal"
    hf = make_tiny_checkpoint("multimodal", directory, **TINY)
    return directory, hf


@pytest.fixture(scope="module")
def ours(tiny):
    return load_model(str(tiny[0]), device="cpu", numerics="transformers")


def make_video(path: Path, n_frames: int, width: int = SIZE, height: int = SIZE, sound: str | None = "tone") -> Path:
    """Moving colour gradients at 25 fps (H.264, near lossless); sound: "tone" (48 kHz AAC), "garbage"
    (AAC packets of random bytes, which no decoder accepts) or None (no audio track)."""
    return write_video(path, n_frames, width, height, sound)


def run(args, capsys):
    code = main(["autoencode-video", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def hf_outputs(hf, frames: torch.Tensor, audio: torch.Tensor) -> dict:
    """transformers' outputs for one clip, every image point and audio patch decoded in one pass."""
    with torch.no_grad():
        logits = hf(inputs={"image": frames.permute(0, 3, 1, 2)[None], "audio": audio[None, :, None],
                            "label": torch.zeros(1, hf.config.num_labels)},
                    subsampled_output_points={"image": torch.arange(T * SIZE * SIZE),
                                              "audio": torch.arange(T * SPF // 16), "label": None}).logits
    return {"video": logits["image"].reshape(T, SIZE, SIZE, 3), "audio": logits["audio"].reshape(-1),
            "label": logits["label"][0]}


def random_clip(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, SIZE, SIZE, 3, generator=g), torch.rand(T * SPF, generator=g) * 1.6 - 0.8


def max_diff(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def count_calls(monkeypatch, cls, name: str) -> list:
    calls = []
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


# ---------------------------------------------------------------------------------------------- core


def test_one_clip_equals_transformers(tiny, ours):
    frames, audio = random_clip(0)
    expected = hf_outputs(tiny[1], frames, audio)
    with torch.no_grad():
        z = ours.encode(frames.permute(0, 3, 1, 2)[None], audio[None])
        raw = decode_clip(ours, z, chunk_size=100)
    assert max_diff(raw["video"][0], expected["video"]) <= 1e-4
    assert max_diff(raw["audio"][0], expected["audio"]) <= 1e-4
    assert max_diff(raw["label"][0], expected["label"]) <= 1e-4
    result = autoencode_clip(ours, frames, audio)
    # random weights overshoot the ranges, so clipping is exercised
    assert expected["video"].min() < 0 or expected["video"].max() > 1
    assert max_diff(result.video, expected["video"].clamp(0, 1)) <= 1e-4
    assert max_diff(result.audio, expected["audio"].clamp(-1, 1)) <= 1e-4
    assert max_diff(result.label_logits, expected["label"]) <= 1e-4
    assert max_diff(result.probabilities, torch.softmax(expected["label"], 0)) <= 1e-5


def test_chunked_equals_unchunked_and_encoder_runs_once(ours):
    frames, audio = random_clip(1)
    encodes, decodes = [], []
    h1 = ours.perceiver.encoder.register_forward_hook(lambda *a: encodes.append(1))
    h2 = ours.perceiver.decoder.decoder.register_forward_hook(lambda *a: decodes.append(1))
    try:
        small = autoencode_clip(ours, frames, audio, chunk_size=70)
        passes = math.ceil(T * SIZE * SIZE / 70) + math.ceil(T * SPF / 16 / 70) + 1
        assert len(encodes) == 1 and len(decodes) == passes
        whole = autoencode_clip(ours, frames, audio, chunk_size=1_000_000)
        assert len(encodes) == 2 and len(decodes) == passes + 3
    finally:
        h1.remove()
        h2.remove()
    for name in ("video", "audio", "label_logits"):
        assert max_diff(getattr(small, name), getattr(whole, name)) <= 1e-5


def test_padded_clip_decodes_and_scores_only_its_real_frames(ours):
    frames, audio = random_clip(2)
    full = autoencode_clip(ours, frames, audio)
    part = autoencode_clip(ours, frames, audio, n_valid_frames=1, chunk_size=50)
    assert part.video.shape == (1, SIZE, SIZE, 3) and part.audio.shape == (SPF,)
    assert max_diff(part.video, full.video[:1]) <= 1e-5
    assert max_diff(part.audio, full.audio[:SPF]) <= 1e-5
    assert max_diff(part.label_logits, full.label_logits) <= 1e-5  # the label sees the whole padded clip
    mse_video = np.mean((part.video.numpy().astype(np.float64) - frames[:1].numpy()) ** 2)
    mse_audio = np.mean((part.audio.numpy().astype(np.float64) - audio[:SPF].numpy()) ** 2)
    assert part.psnr_video == pytest.approx(10 * np.log10(1.0 / mse_video), rel=1e-9)
    assert part.psnr_audio == pytest.approx(10 * np.log10(4.0 / mse_audio), rel=1e-9)


def test_whole_input_scores_pool_errors_and_average_probabilities(ours):
    clips = [random_clip(3), random_clip(4)]
    results = [autoencode_clip(ours, f, a, n_valid_frames=n) for (f, a), n in zip(clips, (T, 2))]
    summary = RunningSummary()
    for r in results:
        summary.add(r)
    assert max_diff(summary.probabilities, (results[0].probabilities + results[1].probabilities) / 2) <= 1e-6
    recon = np.concatenate([r.video.numpy().ravel() for r in results]).astype(np.float64)
    source = np.concatenate([clips[0][0].numpy().ravel(), clips[1][0][:2].numpy().ravel()])
    assert summary.psnr_video == pytest.approx(10 * np.log10(1 / np.mean((recon - source) ** 2)), rel=1e-9)
    recon_a = np.concatenate([r.audio.numpy() for r in results]).astype(np.float64)
    source_a = np.concatenate([clips[0][1].numpy(), clips[1][1][:2 * SPF].numpy()])
    assert summary.psnr_audio == pytest.approx(10 * np.log10(4 / np.mean((recon_a - source_a) ** 2)), rel=1e-9)


def test_clip_geometry_comes_from_the_config(ours):
    g = clip_geometry(ours.spec)
    assert (g.frames_per_clip, g.image_size, g.samples_per_frame, g.samples_per_patch) == (T, SIZE, SPF, 16)
    assert (g.fps, g.sample_rate) == (25, 48000)
    real = spec_from_config({"architectures": ["PerceiverForMultimodalAutoencoding"], "num_labels": 700})
    g = clip_geometry(real)
    assert (g.frames_per_clip, g.image_size, g.samples_per_frame, g.sample_rate) == (16, 224, 1920, 48000)
    bad = spec_from_config({"architectures": ["PerceiverForMultimodalAutoencoding"], "output_shape": [1, 16, 224, 96]})
    with pytest.raises(UsageError):
        clip_geometry(bad)


def test_label_names_prefer_config_names_else_shipped_kinetics():
    from perceiver_cli.tasks.autoencode_clips import label_names

    kinetics = [line for line in SHIPPED_KINETICS.read_text(encoding="utf-8").splitlines() if line]
    assert len(kinetics) == 700 and kinetics[0] == "abseiling"
    arch = ["PerceiverForMultimodalAutoencoding"]
    named = spec_from_config({"architectures": arch, "id2label": {"0": "run", "1": "jump"}})
    assert label_names(named) == ["run", "jump"]
    bare = spec_from_config({"architectures": arch, "num_labels": 700})
    assert label_names(bare) == kinetics
    generic = spec_from_config({"architectures": arch, "id2label": {str(i): f"LABEL_{i}" for i in range(700)}})
    assert label_names(generic) == kinetics
    other = spec_from_config({"architectures": arch, "num_labels": 3})
    assert label_names(other) == ["label 0", "label 1", "label 2"]


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_one_clip_equals_transformers_and_encodes_once(tiny, tmp_path, capsys, monkeypatch):
    clip_file = make_video(tmp_path / "one.mp4", T)  # already 16x16 at 25 fps: one clip exactly
    encodes = count_calls(monkeypatch, MultimodalAutoencoder, "encode")
    code, out, err = run([clip_file, "-w", tiny[0], "--numerics", "transformers", "--chunk-size", "37",
                          "-o", tmp_path / "one.npz", "--json"], capsys)
    assert code == 0, err
    assert len(encodes) == 1
    (clip,) = list(iter_clips(clip_file, frames_per_clip=T, size=SIZE, samples_per_frame=SPF))
    assert clip.n_valid_frames == T
    expected = hf_outputs(tiny[1], torch.from_numpy(clip.frames), torch.from_numpy(clip.audio))
    arrays = np.load(tmp_path / "one.npz")
    assert arrays["video"].dtype == np.float32 and arrays["video"].shape == (T, SIZE, SIZE, 3)
    assert max_diff(arrays["video"], expected["video"].clamp(0, 1)) <= 1e-4
    assert max_diff(arrays["audio"], expected["audio"].clamp(-1, 1)) <= 1e-4
    assert max_diff(arrays["label_logits"], expected["label"][None]) <= 1e-4
    report = json.loads(out)
    probs = torch.softmax(expected["label"].double(), 0)
    best = int(probs.argmax())
    assert report["predictions"][0]["index"] == best and report["predictions"][0]["label"] == f"action {best}"
    assert report["predictions"][0]["score"] == pytest.approx(float(probs[best]), abs=1e-5)
    mse = np.mean((arrays["video"].astype(np.float64) - clip.frames) ** 2)
    assert report["psnr_video"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)


def test_real_mp4_outputs_keep_duration_rate_and_sound(tiny, tmp_path, capsys):
    outs = [tmp_path / "r.mp4", tmp_path / "r.wav", tmp_path / "r.npz"]
    code, out, err = run([MP4, "-w", tiny[0], *sum((["-o", p] for p in outs), [])], capsys)
    assert code == 0, err
    frames_at_25 = 50  # 2.0 s
    with av.open(str(outs[0])) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.average_rate == 25 and (v.codec_context.width, v.codec_context.height) == (SIZE, SIZE)
        assert a.codec_context.name == "aac" and a.sample_rate == 48000
        assert sum(1 for _ in container.decode(video=0)) == frames_at_25
    with av.open(str(outs[0])) as container:
        heard = sum(f.samples for f in container.decode(audio=0))
    assert abs(heard - 2.0 * 48000) <= 2048  # AAC frames of 1024 samples, plus priming
    info = soundfile.info(str(outs[1]))
    assert (info.samplerate, info.frames, info.channels) == (48000, 96000, 1)
    arrays = np.load(outs[2])
    assert arrays["video"].shape == (frames_at_25, SIZE, SIZE, 3) and arrays["video"].dtype == np.float32
    assert 0 <= arrays["video"].min() and arrays["video"].max() <= 1
    assert arrays["audio"].shape == (96000,) and np.abs(arrays["audio"]).max() <= 1
    assert arrays["label_logits"].shape == (math.ceil(frames_at_25 / T), 10)
    assert "video PSNR" in out and "action" in out
    assert [line.split()[-1] for line in out.splitlines() if line.split()[0] == "wrote"] == list(map(str, outs))
    assert err == ""


def test_real_avi_side_by_side_with_json(tiny, tmp_path, capsys):
    target = tmp_path / "sbs.mp4"
    code, out, err = run([AVI, "-w", tiny[0], "-o", target, "--side-by-side", "--top-k", "3", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"input", "outputs", "clips", "predictions", "psnr_video", "psnr_audio"}
    assert report["input"] == str(AVI) and report["outputs"] == [str(target)]
    assert len(report["clips"]) == 41  # 164 frames in clips of 4
    assert [c["start_s"] for c in report["clips"][:3]] == [0.0, 0.16, 0.32]
    for clip in report["clips"]:
        assert len(clip["predictions"]) == 3 and clip["psnr_video"] > 0 and clip["psnr_audio"] > 0
        assert all(item["label"] == f"action {item['index']}" for item in clip["predictions"])
        scores = [item["score"] for item in clip["predictions"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    best = report["predictions"][0]["index"]
    mean_of_best = np.mean([next((i["score"] for i in c["predictions"] if i["index"] == best),
                                 np.nan) for c in report["clips"]])
    assert report["predictions"][0]["score"] == pytest.approx(mean_of_best, abs=1e-5)
    with av.open(str(target)) as container:
        v = container.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (2 * SIZE, SIZE)
        assert container.streams.audio[0].sample_rate == 48000
        written = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(written) == 164
    inputs = np.concatenate([c.frames[:c.n_valid_frames] for c in
                             iter_clips(AVI, frames_per_clip=T, size=SIZE, samples_per_frame=SPF)])
    left = np.stack(written)[:, :, :SIZE].astype(np.float64) / 255
    assert np.abs(left - inputs).mean() < 0.03  # the left half is the model's input (after H.264)


def test_no_audio_track_warns_and_reconstructs_from_silence(tiny, tmp_path, capsys):
    silent = make_video(tmp_path / "silent.mp4", 3, width=40, height=24, sound=None)
    code, out, err = run([silent, "-w", tiny[0], "-o", tmp_path / "s.npz", "-o", tmp_path / "s.mp4", "--json"],
                         capsys)
    assert code == 0, err
    assert "perceiver: warning:" in err and "no audio track" in err and str(silent) in err
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["video"].shape == (3, SIZE, SIZE, 3)  # shorter than one clip: trimmed back to 3 frames
    assert arrays["audio"].shape == (3 * SPF,) and arrays["label_logits"].shape == (1, 10)
    report = json.loads(out)
    # the input sound was silence, so the audio error is the reconstruction's own power
    power = np.mean(arrays["audio"].astype(np.float64) ** 2)
    assert report["psnr_audio"] == pytest.approx(10 * np.log10(4 / power), abs=1e-4)
    with av.open(str(tmp_path / "s.mp4")) as container:
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_broken_audio_track_warns_and_goes_on(tiny, tmp_path, capsys):
    broken = make_video(tmp_path / "broken.mp4", T + 2, sound="garbage")
    code, out, err = run([broken, "-w", tiny[0], "-o", tmp_path / "b.wav"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("perceiver: warning:")]
    assert len(warnings) == 1 and str(broken) in warnings[0] and "silence" in warnings[0]
    assert soundfile.info(str(tmp_path / "b.wav")).frames == (T + 2) * SPF


def test_one_clip_and_one_frame_gives_two_clips_trimmed(tiny, tmp_path, capsys, monkeypatch):
    video = make_video(tmp_path / "five.mp4", T + 1)
    encodes = count_calls(monkeypatch, MultimodalAutoencoder, "encode")
    code, out, err = run([video, "-w", tiny[0], "-o", tmp_path / "f.npz", "-o", tmp_path / "f.wav", "--json"],
                         capsys)
    assert code == 0, err
    assert len(encodes) == 2
    arrays = np.load(tmp_path / "f.npz")
    assert arrays["video"].shape == (T + 1, SIZE, SIZE, 3) and arrays["audio"].shape == ((T + 1) * SPF,)
    assert arrays["label_logits"].shape == (2, 10)
    assert [c["start_s"] for c in json.loads(out)["clips"]] == [0.0, 0.16]
    assert soundfile.info(str(tmp_path / "f.wav")).frames == (T + 1) * SPF


def test_no_video_stream_is_a_one_line_error(tiny, tmp_path, capsys):
    sound_only = write_sound_only(tmp_path / "sound.m4a")
    code, out, err = run([sound_only, "-w", tiny[0], "-o", tmp_path / "x.mp4"], capsys)
    assert code == 1
    assert err.strip().splitlines() == [f"perceiver: error: {sound_only}: no video stream"]
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["sound.m4a"]


@pytest.mark.parametrize("extra,message", [
    (["-o", "{dir}/r.gif"], "cannot write an output with '.gif'"),
    (["-o", "{input}"], "output is the same file as input"),
    (["-o", "{dir}/r.wav", "-o", "{dir}/r.wav"], "given twice"),
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--chunk-size", "0"], "--chunk-size must be at least 1"),
    (["--side-by-side", "-o", "{dir}/r.wav"], "--side-by-side needs a video output"),
])
def test_bad_options_are_usage_errors(tiny, tmp_path, capsys, extra, message):
    video = make_video(tmp_path / "in.mp4", 2)
    args = [a.format(dir=tmp_path, input=video) for a in extra]
    code, out, err = run([video, "-w", tiny[0], *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perceiver: error:") and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_interrupted_run_leaves_no_output(tiny, tmp_path, capsys, monkeypatch):
    import perceiver_cli.core.autoencode as core_autoencode

    video = make_video(tmp_path / "in.mp4", 3 * T)
    real = core_autoencode.autoencode_clip
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(core_autoencode, "autoencode_clip", interrupted)
    outs = ["-o", tmp_path / "r.mp4", "-o", tmp_path / "r.wav", "-o", tmp_path / "r.npz"]
    code, out, err = run([video, "-w", tiny[0], *outs], capsys)
    assert code == 130 and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_help_states_the_core_default_chunk_size_and_the_writers_formats(capsys):
    from perceiver_cli.io.video import SUPPORTED_VIDEO_OUTPUTS
    from perceiver_cli.tasks import autoencode as task

    assert task.DEFAULT_CHUNK_SIZE == DEFAULT_CHUNK_SIZE
    assert task.VIDEO_FORMATS == tuple(suffix.lstrip(".") for suffix in SUPPORTED_VIDEO_OUTPUTS)
    assert main(["autoencode-video", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"bounds memory. [default: {DEFAULT_CHUNK_SIZE}]" in shown
    assert "Examples:" in shown


def test_latents_keys_and_values_are_computed_once_per_clip(ours, monkeypatch):
    layer = ours.perceiver.decoder.decoder.decoding_cross_attention
    calls = []
    original = layer.memory
    monkeypatch.setattr(layer, "memory", lambda z, **kw: calls.append(1) or original(z, **kw))
    frames, audio = random_clip(5)
    autoencode_clip(ours, frames, audio, chunk_size=100)
    assert len(calls) == 3  # once for each modality's queries, not once per chunk


def test_core_takes_the_device_from_its_caller(ours, monkeypatch):
    frames, audio = random_clip(6)
    expected = autoencode_clip(ours, frames, audio, chunk_size=100)

    def asked(*args, **kwargs):
        raise AssertionError("core asked the model where its parameters are")

    monkeypatch.setattr(ours, "parameters", asked)
    again = autoencode_clip(ours, frames, audio, chunk_size=100)
    assert max_diff(again.video, expected.video) == 0 and max_diff(again.label_logits, expected.label_logits) == 0


# ------------------------------------------------------------------------------------- several videos


def _without(record: dict, *keys: str) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def test_several_videos_give_one_record_each_with_outputs_named_after_them(tiny, tmp_path, capsys):
    clips, loose, out = tmp_path / "clips", tmp_path / "loose", tmp_path / "out"
    (clips / "sub").mkdir(parents=True)
    loose.mkdir()
    videos = [make_video(clips / "a.mp4", T + 1), make_video(clips / "sub" / "b.mp4", 2, width=40, height=24),
              make_video(loose / "c.mp4", T, sound=None)]
    (clips / "notes.txt").write_text("not a video\n")
    code, text, err = run([clips, loose / "*.mp4", "-w", tiny[0], "-o", out, "--format", "npz,wav,mp4", "--json"],
                          capsys)
    assert code == 0, err
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["input"] for r in records] == list(map(str, videos))
    for video, record in zip(videos, records):
        assert record["outputs"] == [str(out / f"{video.stem}.{f}") for f in ("npz", "wav", "mp4")]
    made = sorted(f"{v.stem}.{f}" for v in videos for f in ("npz", "wav", "mp4"))
    assert sorted(p.name for p in out.iterdir()) == made
    for video, record in zip(videos, records):  # each equals a run on that video alone
        alone = tmp_path / f"alone-{video.stem}.npz"
        code, single, _ = run([video, "-w", tiny[0], "-o", alone, "--json"], capsys)
        assert code == 0
        assert _without(json.loads(single), "outputs") == _without(record, "outputs")
        together, apart = np.load(out / f"{video.stem}.npz"), np.load(alone)
        for key in ("video", "audio", "label_logits"):
            np.testing.assert_array_equal(together[key], apart[key])
        assert soundfile.info(str(out / f"{video.stem}.wav")).frames == apart["audio"].shape[0]


def test_paths_are_read_from_stdin(tiny, tmp_path, capsys, monkeypatch):
    a, b = make_video(tmp_path / "a.mp4", 2), make_video(tmp_path / "b.mp4", 3)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{b}\n{a}\n".encode())))
    code, out, err = run(["-", "-w", tiny[0], "--json"], capsys)
    assert code == 0, err
    assert [json.loads(line)["input"] for line in out.splitlines()] == [str(b), str(a)]


def test_a_bad_video_among_several_is_one_error_record_and_the_others_run(tiny, tmp_path, capsys):
    clips, out = tmp_path / "clips", tmp_path / "out"
    clips.mkdir()
    good = make_video(clips / "a.mp4", 2)
    data = good.read_bytes()
    (clips / "b.mp4").write_bytes(data[:len(data) // 2])
    make_video(clips / "c.mp4", 3)
    code, text, err = run([clips, "-w", tiny[0], "-o", out, "--format", "npz", "--json"], capsys)
    assert code == 1
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["input"] for r in records] == [str(clips / n) for n in ("a.mp4", "b.mp4", "c.mp4")]
    assert set(records[1]) == {"input", "error"} and "error" not in records[0] and "error" not in records[2]
    assert err.splitlines() == [f"perceiver: error: {clips / 'b.mp4'}: {records[1]['error']}"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "c.npz"]


def test_one_video_into_an_output_folder(tiny, tmp_path, capsys):
    video = make_video(tmp_path / "walk.mp4", 2)
    code, out, err = run([video, "-w", tiny[0], "-o", tmp_path / "out", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["outputs"] == [str(tmp_path / "out" / "walk.mp4")]  # the default format
    with av.open(str(tmp_path / "out" / "walk.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2


@pytest.mark.parametrize("args,message", [
    (["{clips}", "-o", "{dir}/r.npz"], "an output file is for one video file"),
    (["{clips}/a.mp4", "{clips}/sub/b.mp4", "-o", "{dir}/r.npz"], "an output file is for one video file"),
    (["{clips}", "-o", "{dir}/out"], "would both write it"),  # clips/a.mp4 and clips/sub/a.mp4
    (["{clips}/a.mp4", "-o", "{dir}/r.npz", "--format", "npz"], "--format is for an output folder"),
    (["{clips}/a.mp4", "-o", "{dir}/out", "--format", "npz,gif"], "unknown format 'gif'"),
    (["{clips}/a.mp4", "-o", "{dir}/out", "--format", "npz,npz"], "'npz' given twice"),
    (["{clips}/a.mp4", "-o", "{dir}/out", "--format", "wav", "--side-by-side"], "--side-by-side needs a video"),
    (["{clips}/a.mp4", "-o", "{dir}/out", "-o", "{dir}/r.npz"], "give one output folder, or output files"),
    (["{clips}/sub", "-o", "{clips}/sub", "--format", "wav,mp4"], "output is the same file as input"),
])
def test_outputs_for_several_videos_are_checked_before_any_work(tiny, tmp_path, capsys, args, message):
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    for video in (clips / "a.mp4", clips / "sub" / "a.mp4", clips / "sub" / "b.mp4"):
        make_video(video, 2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run([a.format(dir=tmp_path, clips=clips) for a in args] + ["-w", tiny[0]], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perceiver: error:") and message in lines[0], err
    assert out == ""
    assert [p for p in sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) if (tmp_path / p).is_file()] == \
        [p for p in before if (tmp_path / p).is_file()]


def test_text_output_streams_one_block_per_video_without_box_drawing(tiny, tmp_path, capsys):
    a, b = make_video(tmp_path / "a.mp4", T + 1), make_video(tmp_path / "b.mp4", 2)
    code, out, err = run([a, b, "-w", tiny[0], "-k", "2"], capsys)
    assert code == 0, err
    assert not set(out) & set("│┃─━┏┓┗┛┡┩╭╮╰╯┌┐└┘├┤")
    blocks = out.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [str(a), str(b)]
    first = blocks[0].splitlines()
    assert all(line.startswith("  ") for line in first[1:])
    assert [line.split()[:2] for line in first[2:4]] == [["0.00", "s"], ["0.16", "s"]]  # one row per clip
    assert first[4].split()[0] == "whole" and len(first) == 6  # header, 2 clips, whole input's top 2


def test_no_argument_is_a_one_line_usage_error(capsys):
    assert main(["autoencode-video"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("perceiver: error: ")


# --------------------------------------------------------------------------------------------- rotation


def write_picture_clip(path: Path, pictures: np.ndarray, display_rotation: int | None = None) -> Path:
    """Pictures (T, H, W, 3) uint8 at 25 fps, lossless H.264 (4:4:4), optionally with a display rotation."""
    return write_frames(path, pictures, display_rotation=display_rotation)


def test_a_portrait_phone_clip_is_autoencoded_upright(tiny, tmp_path, capsys):
    # Stored landscape 48x24 with a 90-degree display rotation: players show it portrait, 24 wide and 48 tall.
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 256, (T + 1, 24, 48, 3), dtype=np.uint8)
    stored[:, :, :20] = 255  # a white band at the stored left, which a player shows at the bottom
    shown = np.ascontiguousarray(np.rot90(stored, 1, axes=(1, 2)))  # what the player shows
    phone = write_picture_clip(tmp_path / "phone.mp4", stored, display_rotation=90)
    upright = write_picture_clip(tmp_path / "upright.mp4", shown)
    sideways = write_picture_clip(tmp_path / "sideways.mp4", stored)
    code, out, err = run([phone, upright, sideways, "-w", tiny[0], "-o", tmp_path / "out", "--format", "npz",
                          "--json"], capsys)
    assert code == 0, err
    phone_record, upright_record, sideways_record = (json.loads(line) for line in out.splitlines())
    arrays = {name: np.load(tmp_path / "out" / f"{name}.npz") for name in ("phone", "upright", "sideways")}
    for key in ("video", "audio", "label_logits"):
        np.testing.assert_allclose(arrays["phone"][key], arrays["upright"][key], rtol=0, atol=1e-5)
    assert phone_record["psnr_video"] == pytest.approx(upright_record["psnr_video"], abs=1e-4)
    assert phone_record["psnr_video"] != pytest.approx(sideways_record["psnr_video"], abs=1e-2)
    # the model saw the shown picture's centre square: the white band along its bottom, not its left side
    (clip,) = iter_clips(phone, frames_per_clip=T + 1, size=SIZE, samples_per_frame=SPF, on_warning=lambda _: None)
    assert clip.frames[:, -4:].min() > 0.95 and clip.frames[:, :-6, :4].min() < 0.5


def test_a_still_image_is_one_failed_item_not_a_one_frame_video(tiny, tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photo)
    code, out, err = run([photo, "-w", tiny[0], "--json"], capsys)
    assert code == 1
    assert err == f"perceiver: error: {photo}: a still image, not a video\n"
    assert json.loads(out) == {"input": str(photo), "error": "a still image, not a video"}
