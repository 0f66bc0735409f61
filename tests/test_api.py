"""The Python API gives what the CLI's --json gives, for the same inputs and tiny checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import perceiver_cli as pc
from perceiver_cli.cli import main
from tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-weights")
    for kind in ("language", "vision-conv"):
        make_tiny_checkpoint(kind, root / kind, seed=11)
    return root


def _cli_records(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main([*args, "--json", "--device", "cpu"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_import_is_light_and_the_api_is_there():
    code = ("import sys, perceiver_cli as pc; light = 'torch' not in sys.modules; "
            "print(light, callable(pc.load_model), callable(pc.classify), callable(pc.fill_mask))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True", "True"]


def test_fill_mask_equals_the_cli(checkpoints, capsys):
    text = "The cat [MASK:3] on the [MASK]."
    model = pc.load_model(checkpoints / "language", device="cpu")
    ours = pc.fill_mask(model, text, top_k=3, max_span=4)
    (record,) = _cli_records(capsys, "fill-mask", text, "-w", str(checkpoints / "language"), "-k", "3",
                             "--max-span", "4")
    assert ours["predictions"] == record["predictions"]
    assert ours == record and set(ours) >= {"input", "predictions", "masks"}  # the whole record, masks too
    predictions = ours["predictions"]
    assert len(predictions) == 3 and predictions[0]["score"] >= predictions[1]["score"]


def test_fill_mask_of_a_text_without_a_mask_raises():
    with pytest.raises(Exception):
        pc.fill_mask(None, "no mask here")


def test_classify_equals_the_cli_for_paths_arrays_and_pil_images(checkpoints, capsys, tmp_path):
    rng = np.random.default_rng(5)
    arrays = [rng.integers(0, 256, (30 + 7 * i, 40, 3), dtype=np.uint8) for i in range(3)]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    model = pc.load_model(checkpoints / "vision-conv", device="cpu")
    records = _cli_records(capsys, "classify", *map(str, paths), "-w", str(checkpoints / "vision-conv"), "-k", "4")
    expected = [r["predictions"] for r in records]
    by_path = pc.classify(model, [str(p) for p in paths], top_k=4)
    by_array = pc.classify(model, arrays, top_k=4)
    by_pil = pc.classify(model, [Image.fromarray(a) for a in arrays], top_k=4)
    for got in (by_path, by_array, by_pil):
        assert [[p["index"] for p in one] for one in got] == [[p["index"] for p in one] for one in expected]
        np.testing.assert_allclose([[p["score"] for p in one] for one in got],
                                   [[p["score"] for p in one] for one in expected], rtol=1e-5)
    assert set(by_path[0][0]) == {"label", "index", "score"}


def test_classify_of_an_unreadable_image_raises_with_its_problem(checkpoints, tmp_path):
    model = pc.load_model(checkpoints / "vision-conv", device="cpu")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="bad.png"):
        pc.classify(model, [bad])
    with pytest.raises(ValueError, match="uint8"):
        pc.classify(model, [np.zeros((4, 4), dtype=np.float32)])


def test_flow_equals_the_cli_npy_and_flo_for_paths_and_arrays(tmp_path, capsys):
    from perceiver_cli.io.flo import read_flo

    make_tiny_checkpoint("flow", tmp_path / "flow", seed=11)
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(2)]  # 16 windows of 8x12
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for frame, path in zip(frames, paths):
        Image.fromarray(frame).save(path)
    assert main(["flow", *map(str, paths), "-w", str(tmp_path / "flow"), "--device", "cpu",
                 "-o", str(tmp_path / "f.npy"), "-o", str(tmp_path / "f.flo")]) == 0
    expected = np.load(tmp_path / "f.npy")
    model = pc.load_model(tmp_path / "flow", device="cpu")
    by_path = pc.flow(model, str(paths[0]), paths[1])
    by_array = pc.flow(model, frames[0], frames[1])
    assert by_path.dtype == np.float32 and by_path.shape == (20, 30, 2)
    assert np.array_equal(by_path, expected) and np.array_equal(read_flo(tmp_path / "f.flo"), expected)
    np.testing.assert_allclose(by_array, expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 0
    with pytest.raises(ValueError, match="differs"):
        pc.flow(model, frames[0], frames[1][:10])


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory):
    """A tiny multimodal checkpoint: clips of 4 frames of 16x16, 1920 samples a frame (48 kHz at 25 fps)."""
    folder = tmp_path_factory.mktemp("api-multimodal") / "multimodal"
    make_tiny_checkpoint("multimodal", folder, seed=11, num_frames=4, output_shape=[1, 4, 16, 16],
                         audio_samples_per_frame=1920)
    return folder


@pytest.mark.parametrize("sound", ["tone", None])
def test_autoencode_equals_the_cli_npz(multimodal, capsys, tmp_path, sound):
    import av

    from perceiver_cli.io.video import iter_clips
    from synthetic_media import write_video

    video = write_video(tmp_path / "in.mp4", 6, width=40, height=24, sound=sound)  # 25 fps: the model's rate
    _cli_records(capsys, "autoencode-video", str(video), "-w", str(multimodal), "-o", str(tmp_path / "cli.npz"))
    expected = np.load(tmp_path / "cli.npz")
    with av.open(str(video)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    audio = None
    if sound:  # the sound as the CLI hears it: mono at 48 kHz on the video's clock, past the last frame too
        clips = list(iter_clips(video, frames_per_clip=4, size=16, samples_per_frame=1920))
        audio = np.concatenate([clip.audio for clip in clips])
    got = pc.autoencode(pc.load_model(multimodal, device="cpu"), frames, audio)
    assert set(got) == {"video", "audio", "label_logits"}
    assert got["video"].shape == (6, 16, 16, 3) and got["audio"].shape == (6 * 1920,)
    assert got["label_logits"].shape == (2, 10)
    for key in got:
        assert got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-6)


def test_autoencode_of_frames_that_are_not_uint8_rgb_raises(multimodal):
    model = pc.load_model(multimodal, device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        pc.autoencode(model, np.zeros((3, 8, 8, 3), dtype=np.float32))


def test_a_model_of_another_task_is_refused_as_the_command_refuses_it(checkpoints):
    language = pc.load_model(checkpoints / "language", device="cpu")
    with pytest.raises(ValueError, match=r"^model: this is a PerceiverForMaskedLM checkpoint \(language\), which "
                                         r"cannot run 'classify'$"):
        pc.classify(language, [np.zeros((8, 8, 3), np.uint8)])
    vision = pc.load_model(checkpoints / "vision-conv", device="cpu")
    with pytest.raises(ValueError, match="cannot run 'fill-mask'"):
        pc.fill_mask(vision, "a [MASK]")
    with pytest.raises(ValueError, match="cannot run 'flow'"):
        pc.flow(vision, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_classify_of_one_image_returns_its_one_result(checkpoints, tmp_path):
    model = pc.load_model(checkpoints / "vision-conv", device="cpu")
    array = np.random.default_rng(6).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "photo.png")
    (expected,) = pc.classify(model, [array], top_k=2)
    for one in (str(tmp_path / "photo.png"), tmp_path / "photo.png", array, Image.fromarray(array)):
        got = pc.classify(model, one, top_k=2)
        assert [p["index"] for p in got] == [p["index"] for p in expected]


def test_api_errors_are_value_errors_in_the_apis_words(checkpoints):
    language = pc.load_model(checkpoints / "language", device="cpu")
    with pytest.raises(ValueError, match="no mask"):
        pc.fill_mask(language, "no mask here")
    with pytest.raises(ValueError, match=r"^top_k must be between 1 and"):
        pc.fill_mask(language, "a [MASK]", top_k=0)
    with pytest.raises(ValueError, match=r"^device mps was asked for") as caught:
        pc.load_model(checkpoints / "language", device="mps")
    with pytest.raises(ValueError, match=r"^unknown numerics 'fast'"):
        pc.load_model(checkpoints / "language", device="cpu", numerics="fast")
    with pytest.raises(ValueError, match="no-such-folder"):
        pc.load_model(checkpoints / "no-such-folder", device="cpu")
    assert "--" not in str(caught.value)
