"""What packed outputs cost against per-item files, on the output path alone (the model's time is elsewhere).

Usage: python -m benchmarks.packed [--pairs N] [--records N] [--repeats N]

- Flow: N Sintel-sized (436 x 1024 x 2) float32 flow fields, each written as a per-pair .flo (io.flo.write_flo,
  atomic) against handed to the packed-output listener (tasks.packed_outputs) writing Parquet files of
  --items-per-file 1000 (float32, and float16). The extra seconds per pair are set against a pair's model time
  (docs/performance.md: 9.4 s a 368 x 496 window, 6 windows tile a Sintel pair). Target: at most 5% of the run.
- Classify: N records of five predictions and 1000 logits, written as JSON lines (the Reporter's json_line)
  against the Parquet listener (records and logits). Target: Parquet costs under 1 s more than JSON lines.
Medians of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from perceiver_cli.io.flo import write_flo
from perceiver_cli.tasks.base import Item, Result
from perceiver_cli.tasks.packed_outputs import PackedOutputs, array_dtypes
from perceiver_cli.tasks.report import json_line

SINTEL = (436, 1024, 2)
WINDOW_SECONDS = 9.4  # one 368 x 496 flow window on the reference host (docs/performance.md, Latest figures)


def pair_model_seconds() -> float:
    """A Sintel pair's model time: its windows (core.flow.frame_windows) at WINDOW_SECONDS each."""
    from perceiver_cli.core.flow import frame_windows

    return len(frame_windows(SINTEL[0], SINTEL[1], (368, 496))) * WINDOW_SECONDS


def _seconds(job) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        job(Path(folder))
        return time.perf_counter() - start


def flow_jobs(pairs: int):
    flows = [np.random.default_rng(i).standard_normal(SINTEL).astype(np.float32) for i in range(4)]
    results = [Result(Item(i, f"frame_{i:04d}.png"), {"input": f"frame_{i:04d}.png", "input2": f"frame_{i + 1:04d}.png",
                      "outputs": [], "mean_magnitude": 1.0, "max_magnitude": 2.0}) for i in range(pairs)]

    def flo(folder: Path) -> None:
        for i in range(pairs):
            write_flo(folder / f"frame_{i:04d}.flo", flows[i % 4])

    def parquet(precision: str):
        def job(folder: Path) -> None:
            packer = PackedOutputs(folder, "parquet", "flow", array_dtypes("flow", precision))
            for i, result in enumerate(results):
                result.arrays = {"flow": flows[i % 4]}
                packer(result)
            packer.close()
        return job

    return {"flo": flo, "parquet float32": parquet("float32"), "parquet float16": parquet("float16")}


def classify_jobs(count: int):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((16, 1000)).astype(np.float32)
    predictions = [{"label": f"class {k}", "index": k, "score": 0.1} for k in range(5)]
    results = [Result(Item(i, f"photos/{i:06d}.jpg"), {"input": f"photos/{i:06d}.jpg", "predictions": predictions})
               for i in range(count)]

    def jsonl(folder: Path) -> None:
        with open(folder / "labels.jsonl", "w") as stream:
            for result in results:
                stream.write(json_line(result.record) + "\n")

    def parquet(folder: Path) -> None:
        packer = PackedOutputs(folder, "parquet", "classify", array_dtypes("classify"))
        for i, result in enumerate(results):
            result.arrays = {"logits": logits[i % 16]}
            packer(result)
        packer.close()

    return {"json lines": jsonl, "parquet": parquet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for title, jobs in (("flow", flow_jobs(args.pairs)), ("classify", classify_jobs(args.records))):
        times = {name: statistics.median(_seconds(job) for _ in range(args.repeats)) for name, job in jobs.items()}
        base_name, base = next(iter(times.items()))
        for name, seconds in times.items():
            line = f"{title:9s} {name:16s} {seconds:7.3f} s  (+{seconds - base:.3f} s against {base_name})"
            if title == "flow":
                share = (seconds - base) / (args.pairs * pair_model_seconds() + base)
                line += f", {100 * share:+.2f}% of a {args.pairs}-pair run"
            print(line)


if __name__ == "__main__":
    main()
