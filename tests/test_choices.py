"""The one `--format` list parser and the format lists every command shares (perceiver_cli.choices)."""

from __future__ import annotations

import pytest

from perceiver_cli.choices import SILENT_VIDEO_FORMATS, VIDEO_FORMATS, parse_formats
from perceiver_cli.errors import UsageError


def test_formats_are_named_with_or_without_their_dot_in_any_case_and_keep_the_allowed_spelling():
    assert parse_formats("flo, .PNG", (".flo", ".png", ".npy")) == (".flo", ".png")
    assert parse_formats(".wav,mp4", ("mp4", "wav", "npz")) == ("wav", "mp4")


@pytest.mark.parametrize("text, message", [
    ("npz,npz", "--format: 'npz' given twice"),
    ("npz,.NPZ", "--format: 'npz' given twice"),
    ("npz,gif", "--format: unknown format 'gif' (use mp4, wav, npz)"),
    (" , ", "--format: give at least one format"),
])
def test_unknown_repeated_or_missing_formats_are_usage_errors(text, message):
    with pytest.raises(UsageError) as caught:
        parse_formats(text, ("mp4", "wav", "npz"))
    assert str(caught.value).startswith(message)


def test_every_video_format_has_an_encoder_and_only_the_silent_ones_lack_sound():
    from perceiver_cli.io import video

    table = video._OUTPUT_KINDS
    assert set(table) == {f".{name}" for name in VIDEO_FORMATS + SILENT_VIDEO_FORMATS}
    assert {suffix for suffix, (_, _, audio, _) in table.items() if audio is None} == \
        {f".{name}" for name in SILENT_VIDEO_FORMATS}
