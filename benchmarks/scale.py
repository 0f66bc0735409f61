"""Dataset-scale runs: what the Ray engine costs against the local engine, and what resuming costs.

Usage: python -m benchmarks.scale [--photos N] [--repeats N] [--resume-items N] [--data DIR] [--output PATH]
                                  [--store-only]

- Engines: `perceiver classify PHOTOS -w CHECKPOINT --json -q` as whole processes on a full-size vision-conv
  checkpoint (random weights), the local engine against `--engine ray --workers 1 --cpus-per-worker C`
  (one worker holding every usable CPU, on a local Ray cluster the command starts: start-up included).
  Items/s = photos / wall seconds; the two alternate, and the median of the repeats counts. Target: the
  Ray engine at least 0.85x the local engine's items/s. Both must print the same records.
- Resume: a folder of N image files (never read) and a manifest recording all N as finished; the time of
  `perceiver classify FOLDER -w CHECKPOINT --manifest M` (nothing left to run), whole process, and of the
  engine's selection alone in this process (reading the manifest and skipping every item). Target: < 2 s.
- Object store: the same classify over the photos uploaded to a loopback S3 server (moto, tests/s3_server.py)
  against the local folder, alternating, same records; target >= 0.9x (remote reads overlap the model). And
  the listing of a prefix of 10,000 objects beside the server (`io.store.files_under`); target < 2 s.
  `--store-only` runs just these.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
RAY_TARGET = 0.85
RESUME_TARGET_S = 2.0
STORE_TARGET = 0.9
LISTING_TARGET_S = 2.0
LISTED_OBJECTS = 10_000
DEFAULT_OUTPUT = ROOT / "benchmarks" / "RESULTS-scale.md"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _perceiver(*args: str) -> tuple[float, str]:
    """Run `perceiver ARGS` as a process; (wall seconds, stdout). A failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "perceiver_cli", *args], capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmarks.scale: perceiver {' '.join(args[:2])} ... failed ({done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")
    return seconds, done.stdout


def make_checkpoint(folder: Path) -> Path:
    """A full-size vision-conv checkpoint with the benchmarks' seeded random weights."""
    subprocess.run([sys.executable, "-m", "benchmarks.whole_process.make_checkpoint", "vision-conv", str(folder)],
                   check=True, env=_env(), capture_output=True)
    return folder


def engines(checkpoint: Path, photos: Path, count: int, repeats: int, cpus: int) -> dict:
    """Items/s of the local and the Ray engine on the same folder (medians), and whether records agree."""
    common = ["classify", str(photos), "-w", str(checkpoint), "--json", "-q"]
    ray = ["--engine", "ray", "--workers", "1", "--cpus-per-worker", str(cpus)]
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    outputs: dict[str, str] = {}
    for repeat in range(repeats):
        for engine in (("local", "ray") if repeat % 2 == 0 else ("ray", "local")):
            took, out = _perceiver(*common, *(ray if engine == "ray" else []))
            seconds[engine].append(took)
            outputs[engine] = out
            print(f"benchmarks.scale: {engine} engine, {count} photos: {took:.1f} s", file=sys.stderr, flush=True)
    local, remote = (list(map(json.loads, outputs[e].splitlines())) for e in ("local", "ray"))
    same = [r["input"] for r in local] == [r["input"] for r in remote] and all(
        [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]] and
        all(abs(p["score"] - q["score"]) < 1e-4 for p, q in zip(a["predictions"], b["predictions"]))
        for a, b in zip(local, remote))
    rates = {e: count / statistics.median(s) for e, s in seconds.items()}
    return {"seconds": seconds, "rates": rates, "ratio": rates["ray"] / rates["local"], "same_records": same}


def resume(checkpoint: Path, folder: Path, items: int, repeats: int) -> dict:
    """Seconds to resume a run whose `items` items are all finished: whole process, and the selection alone."""
    from perceiver_cli.tasks.classify import ClassifyTask
    from perceiver_cli.tasks.manifest import Manifest, Resume

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder.parent / "resume.jsonl"
    lines = []
    for i in range(items):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(b"\xff\xd8 never read")
        lines.append(json.dumps({"input": str(path), "status": "ok", "outputs": [], "error": None,
                                 "seconds": 0.5, "worker": "bench:1"}) + "\n")
    manifest.write_text("".join(lines))
    whole = []
    for _ in range(repeats):
        took, out = _perceiver("classify", str(folder), "-w", str(checkpoint), "--json", "-q", "--manifest",
                               str(manifest))
        if out.strip():
            raise SystemExit("benchmarks.scale: the resumed run ran items it should have skipped")
        whole.append(took)
    selection = []
    for _ in range(repeats):
        start = time.perf_counter()
        opened = Manifest(manifest)
        left = list(Resume(opened).select(ClassifyTask([str(folder)]).items()))
        opened.close()
        selection.append(time.perf_counter() - start)
        assert not left
    return {"items": items, "whole_process": whole, "selection": selection}


def _s3_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables pointing at the loopback server, with its test credentials."""
    from s3_server import ACCESS_KEY, REGION, SECRET_KEY

    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}


def store(checkpoint: Path, photos: Path, count: int, repeats: int) -> dict:
    """Photos/s of classify from the loopback S3 server against the local folder, and a 10,000-key listing."""
    sys.path.insert(0, str(ROOT / "tests"))
    import boto3
    from s3_server import REGION, S3Server, seed_objects

    server = S3Server()
    server.start()
    try:
        os.environ.update(_s3_env(server.endpoint))
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
        client.create_bucket(Bucket="bench")
        for path in sorted(photos.iterdir()):
            client.put_object(Bucket="bench", Key=f"photos/{path.name}", Body=path.read_bytes())
        common = ["-w", str(checkpoint), "--json", "-q"]
        seconds: dict[str, list[float]] = {"local": [], "s3": []}
        outputs: dict[str, str] = {}
        for _ in range(repeats):
            for where, argument in (("local", str(photos) + "/"), ("s3", "s3://bench/photos/")):
                took, out = _perceiver("classify", argument, *common)
                seconds[where].append(took)
                outputs[where] = out.replace(argument, "")
                print(f"benchmarks.scale: classify from {where}, {count} photos: {took:.1f} s", file=sys.stderr)
        rates = {k: count / statistics.median(v) for k, v in seconds.items()}
        seed_objects("bench", [f"many/{i:06d}.jpg" for i in range(LISTED_OBJECTS)])
        listing, bare = [], []
        from perceiver_cli.io import location
        from perceiver_cli.io.store import files_under

        for _ in range(repeats):
            location.forget_filesystems()  # each listing opens its own connections
            start = time.perf_counter()
            found = files_under("s3://bench/many/", {".jpg"})
            listing.append(time.perf_counter() - start)
            assert len(found) == LISTED_OBJECTS
            start = time.perf_counter()  # the bare client's listing of the same prefix: the server's own cost
            pages = client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="many/")
            assert sum(len(page.get("Contents", [])) for page in pages) == LISTED_OBJECTS
            bare.append(time.perf_counter() - start)
    finally:
        server.stop()
    return {"seconds": seconds, "rates": rates, "ratio": rates["s3"] / rates["local"],
            "same_records": outputs["local"] == outputs["s3"], "listing": listing, "bare_listing": bare}


def render_store(s: dict, photos: int) -> list[str]:
    """The object-store section of the report."""
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    listed = statistics.median(s["listing"])
    return [
        f"## Classify from a loopback S3 server against local disk (vision-conv full size, {photos} photos)", "",
        "| photos from | wall seconds per run | items/s (median) |", "|---|---|---|",
        f"| local disk | {runs(s['seconds']['local'])} | {s['rates']['local']:.3f} |",
        f"| s3:// (moto on loopback) | {runs(s['seconds']['s3'])} | {s['rates']['s3']:.3f} |", "",
        f"S3 / local: **{s['ratio']:.3f}x** (target >= {STORE_TARGET}x: "
        f"{'met' if s['ratio'] >= STORE_TARGET else 'MISSED'}); same records: "
        f"{'yes' if s['same_records'] else 'NO'}.", "",
        f"Listing a prefix of {LISTED_OBJECTS:,} objects: {runs(s['listing'])} s, median {listed:.2f} s (target < "
        f"{LISTING_TARGET_S:g} s: {'met' if listed < LISTING_TARGET_S else 'MISSED'}); boto3's own paginator over "
        f"the same prefix: {runs(s['bare_listing'])} s (the server's cost: {LISTED_OBJECTS // 1000} pages).", ""]


def render(result: dict, args: argparse.Namespace, cpus: int, command: str) -> str:
    """The Markdown report."""
    if "engines" not in result:
        return "\n".join(["# Dataset-scale runs: data on an object store", "",
                          f"Command: `{command}`  ", f"Machine: {os.cpu_count()} CPUs visible, {cpus} usable; "
                          f"Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                          "", *render_store(result["store"], args.photos)])
    e, r = result["engines"], result["resume"]
    ratio_ok = "met" if e["ratio"] >= RAY_TARGET else "MISSED"
    resume_s = statistics.median(r["whole_process"])
    resume_ok = "met" if resume_s < RESUME_TARGET_S else "MISSED"
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    return "\n".join([
        "# Dataset-scale runs: the Ray engine's overhead and the cost of resuming", "",
        f"Command: `{command}`  ", f"Machine: {os.cpu_count()} CPUs visible, {cpus} usable; "
        f"Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
        f"## Ray engine against the local engine (classify, vision-conv full size, {args.photos} photos)", "",
        "Whole processes, start-up included (the Ray run starts its local cluster and one worker holding "
        f"{cpus} CPUs).", "",
        "| engine | wall seconds per run | items/s (median) |", "|---|---|---|",
        f"| local | {runs(e['seconds']['local'])} | {e['rates']['local']:.3f} |",
        f"| ray | {runs(e['seconds']['ray'])} | {e['rates']['ray']:.3f} |", "",
        f"Ray / local: **{e['ratio']:.3f}x** (target >= {RAY_TARGET}x: {ratio_ok}); same records: "
        f"{'yes' if e['same_records'] else 'NO'}.", "",
        f"## Resuming a run with {r['items']:,} finished items", "",
        f"| what | seconds per run | median |", "|---|---|---|",
        f"| whole process (`perceiver classify FOLDER --manifest M`) | {runs(r['whole_process'])} | {resume_s:.2f} |",
        f"| the engine's selection alone (read the manifest, skip every item) | {runs(r['selection'])} | "
        f"{statistics.median(r['selection']):.2f} |", "",
        f"Target < {RESUME_TARGET_S:g} s for the whole process: {resume_ok}.", "",
        *render_store(result["store"], args.photos)])


def main(argv: Optional[list[str]] = None) -> int:
    """Run both measurements and write the report."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=64, help="photos in the engines' folder (default 64)")
    p.add_argument("--repeats", type=int, default=2, help="runs per engine, alternating (default 2)")
    p.add_argument("--resume-items", type=int, default=10_000, help="finished items to skip (default 10000)")
    p.add_argument("--data", default=None, help="a folder with images/ (the photos, repeated)")
    p.add_argument("--store-only", action="store_true", help="only the object-store measurements")
    p.add_argument("--output", default=None, help=f"report path (default {DEFAULT_OUTPUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    from benchmarks.workloads import prepare_photos
    from perceiver_cli.runtime import usable_cpus

    cpus = usable_cpus()
    shown = [f"--{k.replace('_', '-')} {v}" for k, v in (("photos", args.photos), ("repeats", args.repeats),
                                                        ("resume_items", args.resume_items)) if v != p.get_default(k)]
    command = " ".join(["python -m benchmarks.scale", *shown, *(["--data", args.data] if args.data else []),
                        *(["--store-only"] if args.store_only else [])])
    with tempfile.TemporaryDirectory(prefix="perceiver-scale-") as tmp:
        checkpoint = make_checkpoint(Path(tmp) / "vision-conv")
        photos = Path(tmp) / "photos"
        prepare_photos(photos, args.photos, Path(args.data) if args.data else None)
        result = {} if args.store_only else {
            "engines": engines(checkpoint, photos, args.photos, args.repeats, cpus),
            "resume": resume(checkpoint, Path(tmp) / "finished", args.resume_items, args.repeats)}
        result["store"] = store(checkpoint, photos, args.photos, args.repeats)
    report = render(result, args, cpus, command)
    print(report)
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    output.write_text(report, encoding="utf-8")
    print(f"benchmarks.scale: report written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
