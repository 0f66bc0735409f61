"""draw-flow over what flow writes: the (T, H, W, 2) .npy of a video drawn field by field (pictures or a video),
pictures beside the input without -o, and a name clash told in draw-flow's words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.io.flo import write_flo
from perceiver_cli.io.flowviz import flow_to_color


def _draw(capsys, *args) -> tuple[int, list[dict], str]:
    capsys.readouterr()
    code = main(["draw-flow", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def _stack(path: Path, count: int = 3) -> np.ndarray:
    fields = np.random.default_rng(2).normal(0, 3, (count, 8, 12, 2)).astype(np.float32)
    np.save(path, fields)
    return fields


def test_a_videos_npy_of_flow_fields_becomes_one_picture_per_pair(tmp_path, capsys):
    fields = _stack(tmp_path / "flow.npy")
    code, records, err = _draw(capsys, tmp_path / "flow.npy", "-o", tmp_path / "d/")
    assert code == 0, err
    names = [f"flow_{t:06d}.png" for t in range(3)]
    assert records[0]["outputs"] == [str(tmp_path / "d" / n) for n in names] and records[0]["pairs"] == 3
    for name, field in zip(names, fields):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "d" / name)), flow_to_color(field))
    assert records[0]["max_magnitude"] == np.hypot(fields[..., 0], fields[..., 1]).max().item()


def test_a_videos_npy_of_flow_fields_becomes_a_video_with_an_mp4_output(tmp_path, capsys):
    from synthetic_media import iter_frames

    _stack(tmp_path / "flow.npy", 4)
    code, records, err = _draw(capsys, tmp_path / "flow.npy", "-o", tmp_path / "flow.mp4")
    assert code == 0, err
    assert records[0]["outputs"] == [str(tmp_path / "flow.mp4")]
    assert len(list(iter_frames(tmp_path / "flow.mp4"))) == 4


def test_without_o_each_picture_goes_beside_its_flow_file(tmp_path, capsys):
    flow = np.random.default_rng(3).normal(0, 3, (8, 12, 2)).astype(np.float32)
    write_flo(tmp_path / "x.flo", flow)
    _stack(tmp_path / "v.npy", 2)
    code, records, err = _draw(capsys, tmp_path / "x.flo", tmp_path / "v.npy")
    assert code == 0, err
    assert [r["outputs"] for r in records] == [[str(tmp_path / "x.png")],
                                               [str(tmp_path / f"v_{t:06d}.png") for t in range(2)]]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), flow_to_color(flow))


def test_two_flow_files_of_one_name_are_refused_in_draw_flows_words(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_flo(tmp_path / folder / "x.flo", np.zeros((4, 4, 2), np.float32))
    code, records, err = _draw(capsys, tmp_path / "a" / "x.flo", tmp_path / "b" / "x.flo", "-o", tmp_path / "d/")
    assert code == 2 and records == []
    assert err == (f"perceiver: error: {tmp_path / 'd' / 'x.png'}: two flow files ({tmp_path / 'a' / 'x.flo'} and "
                   f"{tmp_path / 'b' / 'x.flo'}) would write the same output; their names differ only in folder "
                   "or extension\n")
