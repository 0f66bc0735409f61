"""The bf16 and flow --downscale measuring scripts keep working (tiny configs; nothing about time), and the
bf16 rows of the benchmarks are what they say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bf16_distance, flow_downscale  # noqa: E402
from benchmarks.tasks import BF16_OF, ROWS, select_rows  # noqa: E402
from perceiver_cli.io.flo import write_flo  # noqa: E402


def _table(out: str) -> dict[str, str]:
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): cells[1].strip() for cells in rows[1:]}


def test_distance_script_measures_every_task(capsys):
    assert bf16_distance.main(["--quick"]) == 0
    table = _table(capsys.readouterr().out)
    assert set(table) == {"flow", "classify, vision-conv", "classify, vision-fourier", "classify, vision-learned",
                          "fill-mask", "autoencode-video"}
    assert "end-point difference" in table["flow"] and "99th percentile" in table["flow"]
    conv = table["classify, vision-conv"]
    assert "top-1 equal" in conv and "probability difference" in conv
    assert "top-5 fills" in table["fill-mask"] and "dB" in table["autoencode-video"]


def test_downscale_script_counts_windows_and_the_round_trip(tmp_path, capsys):
    truth = tmp_path / "flow" / "sintel_alley_1" / "frame_0002_gt.flo"
    truth.parent.mkdir(parents=True)
    y, x = np.mgrid[0:436, 0:1024]
    write_flo(truth, np.stack([np.sin(x / 40.0) * 5, np.cos(y / 30.0) * 3], axis=-1).astype(np.float32))
    assert flow_downscale.main(["--data", str(tmp_path), "--factors", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert lines[0].split("|")[3].strip() == "6" and lines[1].split("|")[3].strip() == "2"
    assert float(lines[1].split("mean ")[1].split(",")[0]) > 0


def test_bf16_rows_sit_beside_their_fp32_rows():
    keys = [r.key for r in ROWS]
    for key in BF16_OF:
        assert keys.index(key + "-bf16") == keys.index(key) + 1
    assert {r.key for r in select_rows("bf16")} == {k + "-bf16" for k in BF16_OF}
    assert all(r.dtype == "bfloat16" and r.fp32_row().dtype == "float32" for r in select_rows("bf16"))
