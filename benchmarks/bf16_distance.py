"""How far bfloat16 on the CPU lands from float32: each task's model, full size, the same seeded random weights
(benchmarks.workloads.randomise) run once in each dtype on the same inputs.

Usage: python -m benchmarks.bf16_distance [--tasks flow,classify,fill-mask,autoencode-video] [--data DIR]
                                          [--threads N] [--quick]

--data names the folder of `python -m benchmarks --data` (images/, flow/sintel_alley_1/); flow runs on the
whole Sintel frames there. Prints one Markdown table (the one in docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Optional

from benchmarks.configs import configs
from benchmarks.tasks import sizes_of
from benchmarks.workloads import (REPO_PHOTOS, SINTEL_PAIR, TOP_K, build, clip_arrays, flow_frames, masked,
                                  short_texts, spec_of)

TASKS = ("flow", "classify", "fill-mask", "autoencode-video")
CLASSIFY_KINDS = ("vision-conv", "vision-fourier", "vision-learned")
NUMERICS = "deepmind"  # what the commands compute by default


def _pair(model, quick: bool, data: Optional[Path]):
    """Two uint8 frames: Sintel's whole frames from `data`, else the benchmark's synthetic window."""
    import numpy as np
    import torch
    from PIL import Image

    paths = [data / name for name in SINTEL_PAIR] if data else []
    if not quick and paths and all(p.is_file() for p in paths):
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    else:
        frames = flow_frames(*model.spec.train_size, None)
    return [torch.from_numpy(np.ascontiguousarray(f)) for f in frames]


def flow_distance(fp32, bf16, quick: bool, data: Optional[Path]) -> list[tuple[str, str]]:
    """End-point difference between the two flows, in pixels and relative to the fp32 flow's mean magnitude."""
    import torch
    from perceiver_cli.core.flow import FlowEstimator

    first, second = _pair(fp32, quick, data)
    flows = [FlowEstimator(m, dtype=dt)(first, second) for m, dt in ((fp32, torch.float32), (bf16, torch.bfloat16))]
    difference = (flows[1] - flows[0]).norm(dim=-1).flatten()
    magnitude = flows[0].norm(dim=-1).mean().item()
    mean, p99 = difference.mean().item(), torch.quantile(difference, 0.99).item()
    size = f"{first.shape[1]}x{first.shape[0]}"
    return [("flow", f"end-point difference over a {size} pair: mean {mean:.3f} px, 99th percentile {p99:.3f} px "
                     f"(mean flow {magnitude:.2f} px: {mean / magnitude:.2%}, {p99 / magnitude:.2%})")]


def _photos(quick: bool, data: Optional[Path]) -> list[Path]:
    folder = data / "images" if data and (data / "images").is_dir() else REPO_PHOTOS
    photos = sorted(p for p in folder.iterdir() if p.is_file())
    return photos[:2] if quick else photos


def _classify(model, dtype: str, photos: list[Path]) -> list[dict[str, float]]:
    """Every class's probability per photo, through the command's own task."""
    from perceiver_cli.runtime import resolve_runtime
    from perceiver_cli.tasks.base import Item
    from perceiver_cli.tasks.classify import ClassifyTask

    task = ClassifyTask([], top_k=model.spec.num_labels)
    task.setup(resolve_runtime("cpu", dtype, configure=False), model)
    try:
        results = list(task.run(Item(i, str(p), data=p) for i, p in enumerate(photos)))
    finally:
        task.close()
    return [{p["label"]: p["score"] for p in r.record["predictions"]} for r in results]


def classify_distance(fp32, bf16, photos: list[Path]) -> list[tuple[str, str]]:
    """Top-1 and top-5 agreement and the largest probability difference over the photos."""
    a, b = _classify(fp32, "float32", photos), _classify(bf16, "bfloat16", photos)
    top = [[sorted(p, key=p.get, reverse=True)[:TOP_K] for p in side] for side in (a, b)]
    top1 = sum(x[0] == y[0] for x, y in zip(*top))
    top5 = sum(x == y for x, y in zip(*top))
    overlap = sum(len(set(x) & set(y)) for x, y in zip(*top)) / (TOP_K * len(photos))
    worst = max(abs(p[k] - q[k]) for p, q in zip(a, b) for k in p)
    return [(f"classify, {fp32.spec.kind}", f"{len(photos)} photos: top-1 equal {top1}/{len(photos)}, top-5 equal "
                                            f"in order {top5}/{len(photos)} ({overlap:.0%} of top-5 labels shared), "
                                            f"largest probability difference {worst:.2e}")]


def _fill(model, dtype: str, texts: list[str]) -> list[list[tuple[tuple[str, ...], float]]]:
    from perceiver_cli.runtime import resolve_runtime
    from perceiver_cli.tasks.fill_mask import FillMaskTask

    task = FillMaskTask(texts, top_k=TOP_K, max_span=12)
    task.setup(resolve_runtime("cpu", dtype, configure=False), model)
    try:
        return [[(tuple(p["fills"]), p["log_prob"]) for p in r.record["predictions"]] for r in task.run(task.items())]
    finally:
        task.close()


def fill_mask_distance(fp32, bf16, count: int) -> list[tuple[str, str]]:
    """Top-1 and top-5 fill agreement and the largest log-probability difference of the best fill."""
    texts = [masked(*item) for item in short_texts(count)]
    a, b = _fill(fp32, "float32", texts), _fill(bf16, "bfloat16", texts)
    top1 = sum(x[0][0] == y[0][0] for x, y in zip(a, b))
    top5 = sum([f for f, _ in x] == [f for f, _ in y] for x, y in zip(a, b))
    shared = sum(len({f for f, _ in x} & {f for f, _ in y}) for x, y in zip(a, b)) / (TOP_K * len(texts))
    worst = max(abs(x[0][1] - y[0][1]) for x, y in zip(a, b))
    return [("fill-mask", f"{len(texts)} texts: best fill equal {top1}/{len(texts)}, top-5 fills equal in order "
                          f"{top5}/{len(texts)} ({shared:.0%} of top-5 fills shared), largest difference of the "
                          f"best fill's log-probability {worst:.3f}")]


def autoencode_distance(fp32, bf16) -> list[tuple[str, str]]:
    """The reconstruction's PSNR in each dtype, and the two reconstructions' own distance."""
    import torch
    from perceiver_cli.core.autoencode import autoencode_clip, psnr_from_error

    frames, audio = (torch.from_numpy(x) for x in clip_arrays(fp32.spec))
    cpu = torch.device("cpu")
    a = autoencode_clip(fp32, frames, audio, device=cpu, dtype=torch.float32)
    b = autoencode_clip(bf16, frames, audio, device=cpu, dtype=torch.bfloat16)
    between = psnr_from_error(float(((b.video.float() - a.video.float()) ** 2).sum()), a.video.numel(), 1.0)
    return [("autoencode-video", f"video PSNR {a.psnr_video:.2f} dB (fp32) against {b.psnr_video:.2f} dB (bf16): "
                                 f"{b.psnr_video - a.psnr_video:+.3f} dB; the bf16 frames against the fp32 frames "
                                 f"{between:.1f} dB; audio PSNR {b.psnr_audio - a.psnr_audio:+.3f} dB; label top-1 "
                                 f"{'equal' if a.label_logits.argmax() == b.label_logits.argmax() else 'differs'}")]


def pair_of_models(kind: str, quick: bool):
    """(the fp32 model, a bf16 copy of it) for a config kind, with the seeded random weights."""
    import torch

    fp32 = build(configs(quick)[kind], "ours", NUMERICS, "cpu")
    return fp32, copy.deepcopy(fp32).to(torch.bfloat16)


def measure(task: str, quick: bool, data: Optional[Path]) -> list[tuple[str, str]]:
    """The table rows of one task."""
    if task == "flow":
        return flow_distance(*pair_of_models("flow", quick), quick, data)
    if task == "classify":
        return [row for kind in CLASSIFY_KINDS
                for row in classify_distance(*pair_of_models(kind, quick), _photos(quick, data))]
    if task == "fill-mask":
        return fill_mask_distance(*pair_of_models("language", quick), sizes_of(quick).short_texts)
    return autoencode_distance(*pair_of_models("multimodal", quick))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bf16_distance", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--data", default=os.environ.get("PERCEIVER_BENCHMARK_DATA") or None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny configs: checks the script only")
    args = p.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {', '.join(unknown)}")
    import torch
    from perceiver_cli.runtime import configure_threads

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads() if args.threads else configure_threads()
    data = Path(args.data) if args.data else None
    print(f"| task | bf16 against fp32 ({'tiny configs' if args.quick else 'full-size'}, random weights, "
          f"{threads} threads) |\n|---|---|")
    for task in tasks:
        start = time.perf_counter()
        for name, text in measure(task, args.quick, data):
            print(f"| {name} | {text} |", flush=True)
        print(f"bf16_distance: {task} took {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
