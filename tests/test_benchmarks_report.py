"""benchmarks.report and benchmarks.targets: figures never read 0 when measured, targets are named in one table
and verdicts follow them. Nothing about time."""

from __future__ import annotations

import sys
from argparse import Namespace
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import figure, gigabytes, render, targets_table  # noqa: E402
from benchmarks.results import RowResult  # noqa: E402
from benchmarks.targets import (HELP_TARGET, MEMORY_RATIO, PEAK_MEMORY, SHARE_OF_PEAK, SPEED_UP,  # noqa: E402
                                TARGETS, stage_target, verdicts)
from benchmarks.tasks import QUICK, ROWS, row_named  # noqa: E402


@pytest.mark.parametrize("value, pattern, expected", [
    (147.4, "{:.0f}", "147"), (0.03, "{:.0f}", "0.03"), (0.4, "{:.0f}%", "0.4%"), (0.0041, "{:.2f}x", "0.0041x"),
    (1.234, "{:.2f}", "1.23"), (4.1e-9, "{:.1f}", "4.1e-09"), (0.0, "{:.0f}", "0"), (None, "{:.2f}", "n/a"),
    (2.3e-7, "{:.1e}", "2.3e-07"),
])
def test_a_measured_figure_never_rounds_to_zero(value, pattern, expected):
    assert figure(value, pattern) == expected


def test_gigabytes_keep_a_small_peak_visible():
    assert gigabytes(1.09e9) == "1.09 GB" and gigabytes(3e6) == "0.003 GB" and gigabytes(None) == "n/a"


def test_every_target_names_rows_and_stages_that_exist_and_no_issue():
    keys = {row.key for row in ROWS}
    assert len({t.name for t in TARGETS}) == len(TARGETS)
    for target in TARGETS:
        assert set(target.rows) <= keys and "issue" not in target.name.lower()
        if target.measure == SHARE_OF_PEAK:
            assert all(any(st.name == target.stage for st in row_named(k).stages) for k in target.rows)
    assert all("issue" not in st.label.lower() for row in ROWS for st in row.stages)
    # every row has a time and a memory target
    for key in keys:
        measures = {t.measure for t in TARGETS if key in t.rows}
        assert SPEED_UP in measures and measures & {MEMORY_RATIO, PEAK_MEMORY}
    assert HELP_TARGET.rows == ()


def _result(key: str, ours_s: float, theirs_s: float, ours_rss: int, theirs_rss: int,
            stack_s: float = 1.0) -> RowResult:
    res = RowResult(row_named(key), flops={"stages": {"latent self-attention": (100e9, 100e9),
                                                      "encoder cross-attention": (10e9, 10e9),
                                                      "decode": (5e9, 5e9)},
                                           "total": (115e9, 115e9), "window": (24, 32)})
    for side, seconds, rss in (("ours", ours_s, ours_rss), ("transformers", theirs_s, theirs_rss)):
        res.add({"side": side, "scale": 1.0, "seconds": [seconds], "peak_rss": rss, "rss_model": rss // 2,
                 "checksum": 1.0, "stages": [{"latent self-attention": stack_s, "encoder": stack_s + 0.1,
                                              "encoder cross-attention": 0.1, "model forward": seconds}]})
    return res


def test_verdicts_follow_the_targets_table():
    speed = next(t for t in TARGETS if t.measure == SPEED_UP and "flow" in t.rows).limit
    memory = next(t for t in TARGETS if t.measure == MEMORY_RATIO and "flow" in t.rows).limit
    passing = _result("flow", 1.0, speed * 1.01, int(memory * 0.99e9), int(1e9))
    assert verdicts(passing, 1e6)["time"] == "PASS" and verdicts(passing, 1e6)["memory"] == "PASS"
    failing = _result("flow", 1.0, speed * 0.99, int(memory * 1.01e9), int(1e9))
    assert verdicts(failing, 1e6)["time"] == "MISS" and verdicts(failing, 1e6)["memory"] == "MISS"
    # the clip's absolute memory limit counts beside its ratio
    limit = next(t for t in TARGETS if t.measure == PEAK_MEMORY).limit
    clip = _result("autoencode-video", 1.0, 100.0, int(limit), int(limit * 2))
    assert verdicts(clip, 1e6)["memory"] == "MISS"
    # 100 GFLOP in 1 s against a 125 GFLOP/s peak: 80%
    stack = next(st for st in passing.row.stages if st.name == "latent self-attention")
    share = stage_target("flow", stack)
    assert verdicts(passing, 100 / (share + 0.01))[stack.label] == "PASS"
    assert verdicts(passing, 100 / (share - 0.01))[stack.label] == "MISS"


def test_targets_table_has_a_line_per_target_of_the_rows_run():
    results = [_result("flow", 1.0, 3.0, int(1e8), int(1e9))]
    lines = targets_table(results, 150.0, 0.1)[2:]
    names = [line.split("|")[1].strip() for line in lines]
    assert names == [t.name for t in TARGETS if "flow" in t.rows or t is HELP_TARGET]
    assert all(line.rstrip(" |").endswith(("PASS", "MISS")) for line in lines)


def test_report_of_tiny_measurements_has_no_zero_figure():
    # a quick run on a loaded machine: microseconds, a few MFLOP, rates far below 1 GFLOP/s
    results = [_result(key, 2e-4, 3e-4, int(3e8), int(4e8), stack_s=1e-4) for key in ("flow", "classify-conv")]
    for res in results:
        res.flops = {"stages": {k: (v[0] / 1e9, v[1] / 1e9) for k, v in res.flops["stages"].items()},
                     "total": (115.0, 115.0), "window": (24, 32)}
    args = Namespace(quick=True, seconds=0.1, numerics="transformers", device="cpu", repeats=1)
    report = render(results, {"512 BLAS at the start": (0.02, 0.01)}, {"perceiver --help": [0.1]}, args, QUICK, ["CPU: test"],
                    datetime.now(timezone.utc), 1.0, "python -m benchmarks --quick")
    table = [line for line in report.splitlines() if line.startswith("| flow |") or
             line.startswith("| classify-conv |")]
    for line in table:
        for cell in line.strip("|").split("|")[2:]:
            first = cell.strip().split(" ")[0].rstrip("x%)").lstrip("(")
            try:
                value = float(first)
            except ValueError:
                continue
            assert value != 0, line
