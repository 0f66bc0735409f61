"""Video reading and writing: real clips from tests/data plus small files made here with PyAV."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.video import (
    Clip,
    MediaWarning,
    VideoInfo,
    VideoWriter,
    iter_clips,
    probe_video,
)
from synthetic_media import iter_frames, write_sound_only

DATA = Path(__file__).resolve().parents[1] / "data" / "video"
AVI = DATA / "ucf101_applyeyemakeup.avi"  # 320x240 Xvid with packed B-frames, 25 fps, 164 frames, MP3
MP4 = DATA / "moviepy_example3.mp4"  # 854x480 H.264, 24 fps, 48 frames, MP3 audio
REAL_CLIPS = [
    pytest.param(AVI, 6.56, 164, id="ucf101-avi"),
    pytest.param(MP4, 2.0, 48, id="moviepy-mp4"),
]
CLIP_SAMPLES = 16 * 1920


def make_video(path: Path, levels: list[int], fps: int = 25, width: int = 32, height: int = 24,
               audio: str | None = None, video_delay: int = 0, audio_delay: int = 0) -> Path:
    """Write flat grey frames (one level each) as H.264; audio: None, 'tone' or 'garbage'.

    The delays (in frames) start the pictures or the sound that much later on the file's clock.
    """
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=44100, layout="mono") if audio else None
        per_frame = 44100 // fps
        for i, level in enumerate(levels):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), level, np.uint8), format="rgb24")
            frame.pts = i + video_delay
            for packet in video.encode(frame):
                container.mux(packet)
            if audio == "tone":
                t = (np.arange(per_frame) + i * per_frame) / 44100
                chunk = av.AudioFrame.from_ndarray((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                   format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, (i + audio_delay) * per_frame
                for packet in sound.encode(chunk):
                    container.mux(packet)
            elif audio == "garbage":
                packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
                packet.stream = sound
                packet.pts = packet.dts = i * per_frame
                packet.time_base = Fraction(1, 44100)
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio == "tone":
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def collect_clips(path: Path, **kwargs) -> tuple[list[Clip], list[str]]:
    messages: list[str] = []
    clips = list(iter_clips(path, on_warning=messages.append, **kwargs))
    return clips, messages


def test_probe_reads_the_ucf101_avi():
    info = probe_video(AVI)
    assert info == VideoInfo(width=320, height=240, fps=25.0, duration_s=pytest.approx(6.56), frame_count=164,
                             has_audio=True, audio_sample_rate=44100)


def test_probe_reads_the_moviepy_mp4():
    info = probe_video(MP4)
    assert (info.width, info.height, info.fps, info.frame_count) == (854, 480, 24.0, 48)
    assert info.duration_s == pytest.approx(2.0)
    assert info.has_audio and info.audio_sample_rate == 44100


def test_probe_of_a_video_without_sound(tmp_path):
    info = probe_video(make_video(tmp_path / "mute.mp4", [0] * 10, fps=10))
    assert info.has_audio is False and info.audio_sample_rate is None
    assert info.frame_count == 10 and info.duration_s == pytest.approx(1.0)


@pytest.mark.parametrize("path, duration, frames", REAL_CLIPS)
def test_iter_frames_streams_every_source_frame(path, duration, frames):
    info = probe_video(path)
    count = 0
    for frame in iter_frames(path):
        assert frame.shape == (info.height, info.width, 3) and frame.dtype == np.uint8
        count += 1
    assert count == frames


@pytest.mark.parametrize("path, duration, frames", REAL_CLIPS)
def test_iter_clips_covers_the_whole_clip_at_25_fps(path, duration, frames):
    clips, messages = collect_clips(path)
    assert messages == []
    assert len(clips) == math.ceil(probe_video(path).duration_s * 25 / 16)
    assert [clip.index for clip in clips] == list(range(len(clips)))
    assert [clip.start_s for clip in clips] == pytest.approx([0.64 * i for i in range(len(clips))])
    for clip in clips:
        assert clip.frames.shape == (16, 224, 224, 3) and clip.frames.dtype == np.float32
        assert clip.frames.min() >= 0.0 and clip.frames.max() <= 1.0
        assert clip.audio.shape == (CLIP_SAMPLES,) and clip.audio.dtype == np.float32
        assert np.abs(clip.audio).max() <= 1.0
    assert all(clip.n_valid_frames == 16 for clip in clips[:-1])
    assert sum(clip.n_valid_frames for clip in clips) == round(duration * 25)
    assert np.abs(clips[0].audio).max() > 0.01  # the real sound came through


@pytest.mark.parametrize("path, duration, frames", REAL_CLIPS)
def test_last_clip_repeats_its_last_frame_and_pads_audio_with_zeros(path, duration, frames):
    last = list(iter_clips(path, on_warning=lambda message: None))[-1]
    valid = last.n_valid_frames
    assert 0 < valid < 16
    assert np.array_equal(last.frames[valid:], np.broadcast_to(last.frames[valid - 1], last.frames[valid:].shape))
    assert np.all(last.audio[(valid + 1) * 1920:] == 0.0)


def test_clips_at_the_source_rate_keep_frames_in_display_order_for_packed_b_frames():
    # This AVI labels frames in decode order; only repaired timestamps give frame k at output k.
    # size 240 = the picture height, so the centre crop is exact pixels with no resize.
    source = iter_frames(AVI)
    checked = 0
    for clip in iter_clips(AVI, size=240, on_warning=lambda message: None):
        for k in range(clip.n_valid_frames):
            expected = next(source)[:, 40:280].astype(np.float32) / 255
            assert np.array_equal(clip.frames[k], expected), f"output frame {clip.index * 16 + k}"
            checked += 1
    assert checked == 164


def test_clips_choose_the_frame_on_screen_at_each_output_time(tmp_path):
    levels = [0, 30, 60, 90, 120, 150, 180, 210]  # 8 frames at 10 fps: 0.8 s
    path = make_video(tmp_path / "steps.mp4", levels, fps=10)

    def shown(fps: float) -> list[int]:
        clips, _ = collect_clips(path, frames_per_clip=4, fps=fps, size=8)
        means = [float(frame.mean()) * 255 for clip in clips for frame in clip.frames[:clip.n_valid_frames]]
        return [int(round(m / 30)) * 30 for m in means]

    assert shown(25.0) == [levels[k * 10 // 25] for k in range(20)]
    assert shown(5.0) == [0, 60, 120, 180]


def test_clips_crop_the_centre_square(tmp_path):
    path = tmp_path / "bands.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = 96, 32, "yuv420p"
        picture = np.zeros((32, 96, 3), np.uint8)
        picture[:, 32:64] = 255  # only the middle third is white
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = 0
        for packet in list(video.encode(frame)) + list(video.encode(None)):
            container.mux(packet)
    clips, _ = collect_clips(path, frames_per_clip=1, size=16)
    assert clips[0].frames[0, :, 2:14].min() > 0.9


def test_video_without_audio_gives_silence_and_one_warning(tmp_path):
    path = make_video(tmp_path / "mute.mp4", [100] * 20)
    clips, messages = collect_clips(path)
    assert len(clips) == 2 and sum(clip.n_valid_frames for clip in clips) == 20
    assert all(not clip.audio.any() for clip in clips)
    assert len(messages) == 1
    assert messages[0].startswith(str(path)) and "no audio" in messages[0] and "\n" not in messages[0]


def test_undecodable_audio_track_gives_silence_and_a_warning(tmp_path):
    path = make_video(tmp_path / "broken_sound.mp4", [100] * 20, audio="garbage")
    assert probe_video(path).has_audio
    clips, messages = collect_clips(path)
    assert sum(clip.n_valid_frames for clip in clips) == 20
    assert all(not clip.audio.any() for clip in clips)
    assert len(messages) == 1
    assert messages[0].startswith(str(path)) and "audio" in messages[0] and "\n" not in messages[0]


def test_warnings_go_to_python_warnings_without_a_callback(tmp_path):
    path = make_video(tmp_path / "mute.mp4", [100] * 5)
    with pytest.warns(MediaWarning, match="no audio"):
        list(iter_clips(path))


def test_audio_is_resampled_to_mono_at_the_requested_rate(tmp_path):
    path = make_video(tmp_path / "tone.mp4", [100] * 25, audio="tone")  # 1 s of 440 Hz at 44.1 kHz
    clips, messages = collect_clips(path, sample_rate=16000, samples_per_frame=640)
    assert messages == []
    audio = np.concatenate([clip.audio for clip in clips])
    assert audio.shape == (2 * 16 * 640,)
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert peak_hz == pytest.approx(440, abs=5)
    assert np.sqrt(np.mean(audio[2000:14000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_audio_that_starts_late_is_preceded_by_silence(tmp_path):
    # Matroska keeps exact timestamps: sound begins 0.2 s (5 frames) after the first picture.
    path = make_video(tmp_path / "late_sound.mkv", [100] * 25, audio="tone", audio_delay=5)
    clips, _ = collect_clips(path)
    audio = np.concatenate([clip.audio for clip in clips])
    assert not audio[:9500].any()
    assert np.sqrt(np.mean(audio[10000:30000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_audio_before_the_first_picture_is_dropped(tmp_path):
    # Pictures begin 0.12 s into the file (52.8 tone cycles, so a missing shift shows as a phase
    # error); the clip's time 0 is the first picture, not the first sound.
    path = make_video(tmp_path / "late_picture.mkv", [100] * 25, audio="tone", video_delay=3)
    clips, _ = collect_clips(path)
    assert sum(clip.n_valid_frames for clip in clips) == 25
    expected = 0.5 * np.sin(2 * np.pi * 440 * (np.arange(20000) + 5760) / 48000)
    assert np.abs(clips[0].audio[2000:20000] - expected[2000:20000]).max() < 0.05


@pytest.mark.parametrize("read", [probe_video, lambda p: list(iter_frames(p)), lambda p: list(iter_clips(p))],
                         ids=["probe", "iter_frames", "iter_clips"])
def test_a_file_without_pictures_is_refused(tmp_path, read):
    path = write_sound_only(tmp_path / "clip.mp4")
    with pytest.raises(InputError, match=r"^.*clip\.mp4: no video stream$"):
        read(path)


def _still(tmp_path: Path, name: str) -> Path:
    from PIL import Image

    path = tmp_path / name
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    picture.save(path, format={".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".mp4": "JPEG"}[path.suffix])
    return path


@pytest.mark.parametrize("name", ["photo.jpg", "picture.png", "picture.webp", "renamed.mp4"])
@pytest.mark.parametrize("read", [probe_video, lambda p: list(iter_clips(p))], ids=["probe", "iter_clips"])
def test_a_still_image_is_refused_as_not_a_video(tmp_path, name, read):
    path = _still(tmp_path, name)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: a still image, not a video$"):
        read(path)


def test_an_animated_gif_is_still_a_video(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    assert probe_video(tmp_path / "moving.gif").width == 32


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is a shopping list, not a video\n")
    return path


def _no_frames(tmp_path: Path) -> Path:
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        container.start_encoding()
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.mp4"


@pytest.mark.parametrize("make", [_empty, _text, _no_frames, _missing], ids=["empty", "text", "no-frames", "missing"])
@pytest.mark.parametrize("read", [probe_video, lambda p: list(iter_frames(p)), lambda p: list(iter_clips(p))],
                         ids=["probe", "iter_frames", "iter_clips"])
def test_unreadable_files_raise_one_line_input_errors(tmp_path, make, read):
    path = make(tmp_path)
    with pytest.raises(InputError) as caught:
        read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_bad_clip_geometry_is_a_usage_error():
    with pytest.raises(UsageError, match="fps"):
        list(iter_clips(MP4, fps=0))
    with pytest.raises(UsageError, match="frames_per_clip"):
        list(iter_clips(MP4, frames_per_clip=0))


def _grey_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    return [np.full((height, width, 3), 8 * i, np.uint8) for i in range(count)]


def test_writer_round_trip_with_audio_leaves_only_the_output(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=25.0, width=64, height=48, audio_sample_rate=44100) as writer:
        for frame in _grey_frames(30, 48, 64):
            writer.write_frame(frame)
        writer.write_audio(np.zeros(44100 * 30 // 25, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.average_rate == 25
        assert (video.width, video.height) == (64, 48)
        assert sound.codec_context.name == "aac" and sound.sample_rate == 44100
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    assert len(decoded) == 30
    assert [int(round(frame.mean())) for frame in decoded] == pytest.approx([8 * i for i in range(30)], abs=2)
    with av.open(str(path)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples == pytest.approx(44100 * 30 / 25, abs=2048)


@pytest.mark.parametrize("suffix, audio_codec, rate", [(".mkv", "aac", 44100), (".mov", "aac", 44100),
                                                       (".webm", "opus", 48000)])
def test_writer_supports_other_containers(tmp_path, suffix, audio_codec, rate):
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, fps=25.0, width=32, height=32, audio_sample_rate=44100) as writer:
        for frame in _grey_frames(10, 32, 32):
            writer.write_frame(frame)
        writer.write_audio(np.zeros(44100 * 10 // 25, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == audio_codec
        assert container.streams.audio[0].sample_rate == rate
        assert len(list(container.decode(video=0))) == 10


def test_writer_pads_odd_sizes_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    frame = np.zeros((47, 63, 3), np.uint8)
    frame[:, -1] = 255  # the last column is white, so the added column must be white too
    with VideoWriter(path, fps=25.0, width=63, height=47) as writer:
        writer.write_frame(frame)
    decoded = next(iter_frames(path))
    assert decoded.shape == (48, 64, 3)
    assert decoded[:, -1].mean() > 200 and decoded[:, :-4].mean() < 20


def test_writer_output_reads_back_through_iter_clips(tmp_path):
    path = tmp_path / "tone.mp4"
    rate = 48000
    with VideoWriter(path, fps=25.0, width=32, height=32, audio_sample_rate=rate) as writer:
        for frame in _grey_frames(16, 32, 32):
            writer.write_frame(frame)
        t = np.arange(16 * 1920) / rate
        writer.write_audio((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    clips, messages = collect_clips(path, size=32)
    assert messages == [] and len(clips) == 1 and clips[0].n_valid_frames == 16
    spectrum = np.abs(np.fft.rfft(clips[0].audio[4800:28800]))
    assert np.argmax(spectrum) * rate / 24000 == pytest.approx(1000, abs=5)


@pytest.mark.parametrize("name", ["out.flv", "out.png", "out"])
def test_writer_refuses_unsupported_extensions(tmp_path, name):
    with pytest.raises(UsageError, match="cannot write video"):
        VideoWriter(tmp_path / name, fps=25.0, width=32, height=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_writer_failure_leaves_no_output_and_no_temporary_file(tmp_path, error):
    path = tmp_path / "out.mp4"
    with pytest.raises(error):
        with VideoWriter(path, fps=25.0, width=32, height=32, audio_sample_rate=48000) as writer:
            for frame in _grey_frames(5, 32, 32):
                writer.write_frame(frame)
            writer.write_audio(np.zeros(4000, np.float32))
            raise error("stopped")
    assert list(tmp_path.iterdir()) == []


def test_writer_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous result")
    with pytest.raises(ValueError):
        with VideoWriter(path, fps=25.0, width=32, height=32) as writer:
            writer.write_frame(np.zeros((16, 16, 3), np.uint8))  # wrong size
    assert path.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
