"""perceiver_cli against transformers' Perceiver IO, task by task, on the same random weights and inputs.

Usage: python -m benchmarks [--quick] [--tasks fill-mask,classify,flow,autoencode-video] [--repeats N]
                            [--threads N] [--device cpu|cuda] [--seconds S] [--data DIR] [--output PATH]
                            [--no-profile]

Every measurement runs in a child process of its own (one side, one task, one repeat; sides alternate
within each task; a short task is timed a few times in each child), so each side's peak RSS (VmHWM of
that process) holds only its own model and work. Weights are random, drawn per state_dict key from a seed,
so both sides hold identical values without ever loading the other side's library. The machine's fp32
matmul peak is measured at the start and the end of the run; FLOP counts come from benchmarks.flops
(computed from the configs' layer sizes). With --quick, tiny configs run, one child per side (repeats
inside it), to keep the harness itself tested.

Modules: tasks (rows and units of work), workloads (what each side runs), harness (child processes, peak,
kernel bounds, FLOPs), targets (the targets and verdicts), report (the Markdown).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from benchmarks.harness import (ROOT, child_main, compute_flops, help_time, machine_description, matmul_peak,
                                measure_bounds, peak_seconds, run_child, source_description)
from benchmarks.report import gigabytes, render
from benchmarks.results import SIDES, RowResult
from benchmarks.targets import verdicts
from benchmarks.tasks import TASKS, select_rows, sizes_of
from benchmarks.workloads import prepare_photos

DEFAULT_OUTPUT = ROOT / "benchmarks" / "RESULTS.md"
DATA_ENV = "PERCEIVER_BENCHMARK_DATA"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """Command-line options (the --child ones are internal)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configs, about a minute: tests the harness only")
    p.add_argument("--tasks", default=None, help=f"comma-separated tasks or rows ({', '.join(TASKS)}); default all")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default 3, quick 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per side (default: what a perceiver command uses here, "
                        "perceiver_cli.runtime.configure_threads)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; cuda falls back to cpu when absent")
    p.add_argument("--numerics", default="transformers", choices=("transformers", "deepmind"),
                   help="our side's numerics (default transformers: like for like)")
    p.add_argument("--output", default=None, help="report path (default benchmarks/RESULTS.md; with --quick, "
                                                    "a file in the temp directory)")
    p.add_argument("--no-profile", action="store_true", help="skip profiling the rows that miss a target")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds of products per size and engine for the matmul peak, and per product for the "
                        "kernel bound (default 6, quick 0.1; an accelerator needs far less)")
    p.add_argument("--data", default=os.environ.get(DATA_ENV) or None,
                   help="a folder with images/ (the photos to classify, repeated) and flow/sintel_alley_1/ "
                        f"(frames 2 and 3 for the flow window); default ${DATA_ENV}, else the repository's test "
                        "photo and synthetic frames")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", default="ours", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--photos", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inner-repeats", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        from perceiver_cli.runtime import configure_threads

        args.threads = configure_threads()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1 or args.threads < 1 or args.inner_repeats < 1:
        p.error("--repeats and --threads must be at least 1")
    if args.seconds is None:
        args.seconds = peak_seconds(args.quick)
    elif not args.seconds > 0:
        p.error("--seconds must be positive")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmarks (or, internally, one child)."""
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    import torch

    rows = select_rows(args.tasks)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks: --device cuda asked for, but no CUDA device is available; running on cpu",
              file=sys.stderr)
        args.device = "cpu"
    sizes = sizes_of(args.quick)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    shown = (["--quick"] if args.quick else []) + (
        ["--tasks", args.tasks] if args.tasks else []) + ["--repeats", str(args.repeats), "--threads",
                                                          str(args.threads)]
    if args.device != "cpu":
        shown += ["--device", args.device]
    if args.numerics != "transformers":
        shown += ["--numerics", args.numerics]
    if args.seconds != peak_seconds(args.quick):
        shown += ["--seconds", f"{args.seconds:g}"]
    if args.data:
        shown += ["--data", args.data]
    command = "python -m benchmarks " + " ".join(shlex.quote(x) for x in shown)
    machine = machine_description(args.threads, args.device) + [source_description()]
    print(f"benchmarks: {len(rows)} row(s), {args.repeats} repeat(s), {args.threads} thread(s); measuring the "
          "matmul peak", file=sys.stderr, flush=True)
    peak_start = matmul_peak(sizes.matmul_sizes, args.threads, args.device, args.seconds)
    from benchmarks.configs import configs

    cfgs = configs(args.quick)
    results = [RowResult(r, flops=compute_flops(r, cfgs[r.kind], sizes, args.numerics, args.device)) for r in rows]
    measure_bounds(results, cfgs, sizes, args.device, args.seconds)  # as long as the peak, as generous
    failed = False
    with tempfile.TemporaryDirectory(prefix="perceiver-bench-") as tmp:
        photos_dir = Path(tmp) / "photos"
        prepare_photos(photos_dir, sizes.photos, Path(args.data) if args.data else None)
        by_key = {res.row.key: res for res in results}

        def absorb(out: list[dict], error: Optional[str], keys: list[str]) -> None:
            nonlocal failed
            for r in out:
                by_key[r["row"]].add(r)
                took = ", ".join(f"{t * r['scale']:.2f}" for t in r.get("seconds", []))
                print(f"benchmarks:   {r['row']} {r['side']}: {took} s, peak RSS {gigabytes(r['peak_rss'])}",
                      file=sys.stderr, flush=True)
            if error:
                failed = True
                for k in keys:
                    by_key[k].errors.append(error)
                print(f"benchmarks: {error}", file=sys.stderr, flush=True)

        if args.quick:  # one child per side, all rows and repeats inside it
            keys = [r.key for r in rows]
            for side in SIDES:
                absorb(*run_child(keys, side, args, photos_dir, args.repeats), keys)
        else:
            for res in results:
                for rep in range(args.repeats):
                    order = SIDES if rep % 2 == 0 else SIDES[::-1]
                    for side in order:
                        print(f"benchmarks: {res.row.key} repeat {rep + 1}/{args.repeats}: {side}",
                              file=sys.stderr, flush=True)
                        absorb(*run_child([res.row.key], side, args, photos_dir, res.row.inner_repeats),
                               [res.row.key])
        for res in results:
            for side in SIDES:
                if len(res.checksums[side]) > 1:
                    res.errors.append(f"{side}: weights differ between repeats")
            if res.checksums["ours"] and res.checksums["transformers"] and \
                    res.checksums["ours"] != res.checksums["transformers"]:
                res.errors.append("the two sides' weights differ")
        if not args.no_profile:
            peak_gflops = max(best for best, _ in peak_start.values())
            missed = [res for res in results if "MISS" in verdicts(res, peak_gflops).values() and not res.errors]
            for res in missed[:1] if args.quick else missed:  # quick: one, to keep the path tested
                print(f"benchmarks: profiling {res.row.key} (ours)", file=sys.stderr, flush=True)
                out, error = run_child([res.row.key], "ours", args, photos_dir, 1, profile=True)
                if out and "profile" in out[0]:
                    res.profile, res.profile_unit = out[0]["profile"], out[0].get("profile_unit", "")
                if error:
                    print(f"benchmarks: profiling failed: {error}", file=sys.stderr)
    helps = help_time(sizes.help_repeats)
    peak_end = matmul_peak(sizes.matmul_sizes, args.threads, args.device, args.seconds)
    peak = {f"{n} at the {when}": g for when, measured in (("start", peak_start), ("end", peak_end))
            for n, g in measured.items()}
    report = render(results, peak, helps, args, sizes, machine, started, time.perf_counter() - t0, command)
    print(report)
    output = Path(args.output) if args.output else (
        Path(tempfile.gettempdir()) / "perceiver-benchmarks-quick.md" if args.quick else DEFAULT_OUTPUT)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report, encoding="utf-8")
    print(f"benchmarks: report written to {output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
