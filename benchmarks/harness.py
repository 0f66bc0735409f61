"""The harness: child processes (one side, one task), the timers and memory readings inside them, the
machine's matmul peak, the kernel bounds, FLOP counts and the description of the machine and source.

Every measurement runs in a child process of its own (one side, one task, one repeat), so each side's peak
RSS (VmHWM of that process) holds only its own model and work.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.results import RowResult
from benchmarks.tasks import Row, Sizes, row_named, sizes_of
from benchmarks.workloads import build, long_text_span, short_texts, spec_of, workload

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARKER = "BENCHMARK-RESULT "
CHILD_TIMEOUT_S = 4 * 3600


class StageTimer:
    """Wall time spent inside named modules (forward hooks); nested calls of one stage count once."""

    STAGES = {"": "model forward", "perceiver.encoder": "encoder",
              "perceiver.encoder.cross_attention": "encoder cross-attention"}

    def __init__(self, model: Any, sync: Callable[[], None]):
        self.sync = sync
        self.totals: dict[str, float] = {}
        self._depth: dict[str, int] = {}
        self._start: dict[str, float] = {}
        for name, module in model.named_modules():
            stage = self.STAGES.get(name)
            parts = name.split(".")
            if stage is None and len(parts) == 4 and parts[:3] == ["perceiver", "encoder", "self_attends"]:
                stage = "latent self-attention"
            if stage is not None:
                module.register_forward_pre_hook(self._enter(stage))
                module.register_forward_hook(self._leave(stage))

    def _enter(self, stage: str):
        def hook(module, args):
            if self._depth.get(stage, 0) == 0:
                self.sync()
                self._start[stage] = time.perf_counter()
            self._depth[stage] = self._depth.get(stage, 0) + 1
        return hook

    def _leave(self, stage: str):
        def hook(module, args, output):
            self._depth[stage] -= 1
            if self._depth[stage] == 0:
                self.sync()
                self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - self._start[stage]
        return hook

    def reset(self) -> None:
        """Forget what was measured so far (after a warm-up)."""
        self.totals.clear()


def _vm_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def profile_summary(run: Callable[[], Any], top: int = 10) -> list[dict[str, Any]]:
    """Run once under torch.profiler; the ops with the most self time: name, self s, share, calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def child_main(args: argparse.Namespace) -> int:
    """Run the requested rows for one side; print one JSON result line per row."""
    import torch

    from benchmarks.configs import configs
    from benchmarks.timing import synchronizer
    from benchmarks.workloads import checksum

    torch.set_num_threads(args.threads)
    sizes = sizes_of(args.quick)
    cfgs = configs(args.quick)
    photos = sorted(Path(args.photos).iterdir()) if args.photos else []
    data = Path(args.data) if args.data else None
    cuda = args.device.startswith("cuda")
    sync = synchronizer(args.device)
    for key in args.child.split(","):
        row = row_named(key)
        if row.task == "classify" and args.profile:
            photos_used = photos[:sizes.batch]
        else:
            photos_used = photos
        gc.collect()
        peak_reset = _reset_peak_rss()
        rss_start = _vm_kb("VmRSS") * 1024
        # a bf16 row's second side is our own model in fp32 (see tasks.Row.dtype)
        side, dtype = ("ours", row.dtype if args.side == "ours" else "float32") if row.dtype != "float32" else (
            args.side, "float32")
        model = build(cfgs[row.kind], side, args.numerics, args.device)
        weights_sum = checksum(model)  # before any cast: both sides of a bf16 row hold the same weights
        model = model.to(getattr(torch, dtype))  # parameter by parameter: the fp32 copy never doubles
        rss_model = _vm_kb("VmRSS") * 1024
        timer = StageTimer(model, sync)
        texts_for_profile = sizes if not (args.profile and row.fp32_row().key == "fill-mask-batch") else Sizes(
            **{**sizes.__dict__, "short_texts": max(1, sizes.short_texts // 4)})
        work = workload(row, model, side, cfgs[row.kind], texts_for_profile, args.device, photos_used, data, dtype)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result: dict[str, Any] = {"row": key, "side": args.side, "note": work.note, "scale": work.scale,
                                  "checksum": weights_sum, "threads": torch.get_num_threads()}
        if args.profile:
            work.run()  # warm-up, so one-time costs stay out of the profile
            result["profile"] = profile_summary(work.run)
            result["profile_unit"] = ("8 photos (one batch)" if row.task == "classify" else
                                      f"{texts_for_profile.short_texts} texts" if row.key == "fill-mask-batch" else "")
        else:
            if row.warmup:
                work.run()
            seconds, stages = [], []
            out = None
            for _ in range(args.inner_repeats):
                timer.reset()
                sync()
                start = time.perf_counter()
                out = work.run()
                sync()
                seconds.append(time.perf_counter() - start)
                stages.append(dict(timer.totals))
            result.update(seconds=seconds, stages=stages, fingerprint=work.fingerprint(out))
        result.update(peak_rss=_vm_kb("VmHWM") * 1024, rss_model=rss_model, rss_start=rss_start,
                      peak_reset=peak_reset)
        if cuda:
            result["cuda_peak"] = torch.cuda.max_memory_allocated()
        print(RESULT_MARKER + json.dumps(result), flush=True)
        del model, work, timer
    return 0


def matmul_peak(sizes: tuple[int, ...], threads: int, device: str, min_seconds: float = 6.0,
                tries: int = 3) -> dict[str, tuple[float, float]]:
    """fp32 GFLOP/s of square matrix products of each size on `threads` threads, by each engine torch
    offers here (its default BLAS; on the CPU also oneDNN, which our dense layers use on some CPUs):
    at least `tries` products and `min_seconds` of them per size and engine. Keys: "<size> <engine>";
    values: (best: the fastest product, since other work on a shared machine only ever slows one down;
    sustained: all the products' FLOPs over their total time)."""
    import torch

    from benchmarks.timing import call_seconds, synchronizer
    from perceiver_cli.core.layers import onednn_linear, onednn_linear_works

    sync = synchronizer(device)
    torch.set_num_threads(threads)
    out: dict[str, tuple[float, float]] = {}
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        c = torch.empty(n, n, device=device)
        engines = {"BLAS": lambda: torch.mm(a, b, out=c)}
        if device == "cpu" and onednn_linear_works():
            engines["oneDNN"] = lambda: onednn_linear(a, b)
        for name, product in engines.items():
            sync()
            times = call_seconds(product, sync, min_seconds, tries)
            out[f"{n} {name}"] = (2 * n ** 3 / min(times) / 1e9, len(times) * 2 * n ** 3 / sum(times) / 1e9)
    return out


def stack_rows_of(row: Row, config: dict, sizes: Sizes, device: str) -> int:
    """Sequences per pass through the latent stack in our side's unit of work (core.layers.stack_rows)."""
    import torch

    from perceiver_cli.core.layers import stack_rows
    from perceiver_cli.core.text import MAX_BATCH_ROWS

    batch = {"fill-mask": 1, "fill-mask-batch": min(sizes.short_texts, MAX_BATCH_ROWS)}.get(
        row.fp32_row().key, sizes.batch if row.task == "classify" else 1)
    return stack_rows(batch, spec_of(config).num_latents, torch.device(device))


def measure_bounds(results: list[RowResult], cfgs: dict, sizes: Sizes, device: str, min_seconds: float) -> None:
    """Set each row's kernel bound (benchmarks.bound), measuring each distinct stack shape once."""
    from benchmarks import flops
    from benchmarks.bound import stack_bound

    done: dict[tuple, Any] = {}
    for res in results:
        config = cfgs[res.row.kind]
        dims = flops.layer_dims(flops.meta_model(config).perceiver.encoder.self_attends[0])
        key = (dims, stack_rows_of(res.row, config, sizes, device), spec_of(config).num_latents)
        if key not in done:
            print(f"benchmarks: kernel bound of a {key[1]} x {key[2]}-latent stack layer", file=sys.stderr, flush=True)
            done[key] = stack_bound(*key, device=device, min_seconds=min_seconds)
        res.bound = done[key]


HELP_COMMANDS = ((), ("fill-mask",), ("classify",), ("flow",), ("draw-flow",), ("autoencode-video",), ("eval",),
                 ("eval", "flow"), ("weights",))


def help_time(repeats: int) -> dict[str, list[float]]:
    """Wall times of `perceiver --help` and of each subcommand's --help, in fresh processes (one untimed round
    first, to warm file caches): {"perceiver SUBCOMMAND --help": [seconds, ...]}."""
    exe = shutil.which("perceiver") or str(Path(sys.executable).parent / "perceiver")
    base = [exe] if Path(exe).exists() else [sys.executable, "-m", "perceiver_cli"]
    times: dict[str, list[float]] = {}
    for i in range(repeats + 1):
        for words in HELP_COMMANDS:
            start = time.perf_counter()
            subprocess.run([*base, *words, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
            if i:
                times.setdefault(" ".join(["perceiver", *words, "--help"]), []).append(time.perf_counter() - start)
    return times


def run_child(rows: list[str], side: str, args: argparse.Namespace, photos_dir: Path, inner_repeats: int,
              profile: bool = False) -> tuple[list[dict], Optional[str]]:
    """Run a child process; its per-row results, or an error message."""
    cmd = [sys.executable, "-m", "benchmarks", "--child", ",".join(rows), "--side", side,
           "--threads", str(args.threads), "--device", args.device, "--numerics", args.numerics,
           "--photos", str(photos_dir), "--inner-repeats", str(inner_repeats)]
    if args.quick:
        cmd.append("--quick")
    if args.data:
        cmd += ["--data", str(args.data)]
    if profile:
        cmd.append("--profile")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    results = [json.loads(line[len(RESULT_MARKER):]) for line in proc.stdout.splitlines()
               if line.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or len(results) != len(rows):
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return results, f"{side} child for {','.join(rows)} exited {proc.returncode}: {tail}"
    return results, None


def compute_flops(row: Row, config: dict, sizes: Sizes, numerics: str, device: str = "cpu") -> dict[str, Any]:
    """Per-stage FLOPs of the row's unit of work for ours and for transformers (benchmarks.flops)."""
    import torch

    from benchmarks import flops

    model = flops.meta_model(config, numerics)
    if row.task == "fill-mask":
        if row.key == "fill-mask":
            items = [(sizes.text_bytes, long_text_span(sizes)[1])]
        else:
            items = [(len(t), n) for t, _, n in short_texts(sizes.short_texts)]
        lengths, masked = flops.padded_texts(items, model.spec.num_latents, torch.device(device))
        stages = flops.language_stages(model, lengths, masked, model.spec.max_position_embeddings)
    elif row.task == "classify":
        from perceiver_cli.core.layers import stack_rows

        rows = stack_rows(sizes.batch, model.spec.num_latents, torch.device(device))
        stages = flops.vision_stages(model, sizes.photos, sizes.batch, rows)
    elif row.task == "flow":
        stages = flops.flow_stages(model)
    else:  # transformers' time is scaled to all its chunks, so its FLOPs count all of them too
        stages = flops.multimodal_stages(model, sizes.clip_chunks, sizes.clip_chunks)
    total = flops.total(stages)
    return {"stages": {k: (v.ours, v.reference) for k, v in stages.items()}, "total": (total.ours, total.reference),
            "window": tuple(model.spec.train_size) if row.task == "flow" else None}


def machine_description(threads: int, device: str) -> list[str]:
    """CPU model, cores, memory, library versions."""
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 ** 2:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    try:
        import transformers

        tv = transformers.__version__
    except ImportError:
        tv = "not installed"
    lines = [f"CPU: {cpu}; {os.cpu_count()} logical cores ({usable} usable){mem}; {threads} torch threads per side",
             f"torch {torch.__version__}, transformers {tv}, Python {platform.python_version()}, {platform.platform()}"]
    if device.startswith("cuda"):
        lines.append(f"device: {torch.cuda.get_device_name(0)}")
    else:
        from perceiver_cli.core.layers import MATMUL_ENV, onednn_linear_available

        engine = "oneDNN" if onednn_linear_available() else "torch's default BLAS (F.linear)"
        lines.append(f"torch's CPU kernels: {torch.backends.cpu.get_cpu_capability()}; our fp32 dense layers: "
                     f"{engine} ({MATMUL_ENV}={os.environ.get(MATMUL_ENV, '(unset)')})")
    try:
        load = os.getloadavg()
        lines.append(f"load average at start: {load[0]:.1f} (other work on this machine makes timings noisy)")
    except OSError:
        pass
    return lines


def source_description() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "perceiver_cli"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "source: not a git checkout"
    return f"source: commit {head}" + (" with uncommitted changes in perceiver_cli/" if dirty else "")


def peak_seconds(quick: bool) -> float:
    """Seconds of products per size and engine for the matmul peak, and per product for the kernel bound.
    --quick times nothing that counts, and its tiny products repeat thousands of times in a tenth of a
    second."""
    return 0.1 if quick else 6.0


