"""The bad-input suite, continued: manifests that are not manifests, special files as inputs and outputs, sizes
past any real use, non-finite results, file names that are not UTF-8, and leftovers of a killed run.

The same three checks as tests/test_bad_input.py (`assert_refused`: exit code, exactly the expected stderr
lines, nothing written), with its fixtures: tiny random checkpoints and inputs made in each test.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from test_bad_input import FLOW_H, FLOW_W, assert_refused, cli, error_line, save_png, weights  # noqa: F401

MANIFEST_REFUSED = r"perceiver: error: --manifest {}: line 1 is not a manifest record; give a new file or one " \
                   r"an earlier run of this command wrote"


# ----------------------------------------------------------------------------------------------------------
# --manifest: only a manifest of this command is read, and only a manifest is ever repaired

NOT_MANIFESTS = {
    "json object without a newline": b'{"important": 1}',
    "PNG picture": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "NUL bytes": bytes(4096),
    "text notes": b"first line\nsecond line, no newline",
}


@pytest.mark.parametrize("content", NOT_MANIFESTS.values(), ids=list(NOT_MANIFESTS))
def test_a_file_that_is_not_a_manifest_is_refused_and_left_byte_for_byte(cli, weights, tmp_path, content):
    notes = tmp_path / "notes.json"
    notes.write_bytes(content)
    result = cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", "notes.json")
    assert_refused(result, 2, MANIFEST_REFUSED.format("notes.json"))
    assert notes.read_bytes() == content


def test_a_fifo_as_manifest_is_refused_at_once(cli, weights, tmp_path):
    os.mkfifo(tmp_path / "run.jsonl")
    result = cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", "run.jsonl")
    assert_refused(result, 2, r"perceiver: error: --manifest run.jsonl: is a FIFO, not a regular file")


def test_the_manifest_of_another_command_is_refused_and_left_as_it_is(cli, weights, tmp_path):
    assert cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", "run.jsonl").code == 0
    before = (tmp_path / "run.jsonl").read_bytes()
    result = cli("classify", save_png(tmp_path / "a.png"), "-w", weights["vision-conv"], "--manifest", "run.jsonl")
    assert_refused(result, 2, r"perceiver: error: --manifest run.jsonl: it is the manifest of `fill-mask`, not of "
                              r"`classify`; give each command its own manifest")
    assert (tmp_path / "run.jsonl").read_bytes() == before


def test_a_torn_last_record_of_a_manifest_is_still_cut_before_appending(cli, weights, tmp_path):
    manifest = tmp_path / "run.jsonl"
    assert cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", manifest).code == 0
    whole = manifest.read_bytes()
    manifest.write_bytes(whole + b'{"input": "x", "sta')
    assert cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", manifest).code == 0
    assert manifest.read_bytes() == whole
