"""The report: the Markdown that a run writes (tasks against transformers, the targets, the heavy stages
against the matmul peak and their kernel bounds, per-side details and the command that reproduces it)."""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime
from typing import Optional

from benchmarks.results import SIDES, RowResult, ratio, stage_bound, stage_flops, stage_rate
from benchmarks.targets import (HELP_TARGET, MEMORY_RATIO, PEAK_MEMORY, SPEED_UP, TARGETS, Target, help_met,
                                stage_target, stage_verdict, target_met, targets_of, verdicts)
from benchmarks.tasks import BF16_SUFFIX, LATENT_STACK, Sizes


def figure(x: Optional[float], pattern: str = "{:.2f}") -> str:
    """x in `pattern` (one format field, then a unit such as 'x' or '%'), or 'n/a'; a non-zero value that the
    pattern would round to zero gets two significant digits instead, so a measured figure never reads 0."""
    if x is None:
        return "n/a"
    text = pattern.format(x)
    if x != 0 and not any(c in "123456789" for c in text.split("e")[0]):
        text = "{:.2g}".format(x) + pattern.partition("}")[2]
    return text


def gigabytes(x: Optional[float]) -> str:
    """Bytes as 'N.NN GB' ('n/a' when unknown)."""
    return "n/a" if x is None else f"{figure(x / 1e9)} GB"


def bound_lines(res: RowResult, peak_gflops: float) -> list[str]:
    """The kernel bound of a row's latent stack, product by product, against what our stack achieved."""
    b = res.bound
    if b is None:
        return []
    parts = "; ".join(f"{k.product}: {figure(k.gflops, '{:.0f}')} GFLOP/s ({k.kernel})" for k in b.kernels)
    achieved = stage_rate(res, next(st for st in res.row.stages if st.name == LATENT_STACK), "ours")
    share = f"; our stack ran at {figure(100 * achieved / b.gflops, '{:.0f}%')} of it" if achieved else ""
    return [f"- kernel bound of one latent stack layer ({b.rows} x {b.num_latents} latents a pass), each product "
            f"alone at its best: {parts}. Together: {figure(b.gflops, '{:.0f}')} GFLOP/s, "
            f"{figure(100 * b.gflops / peak_gflops, '{:.0f}%')} of the peak{share}. At each product's median speed "
            f"over the same calls instead of its best: {figure(b.median_gflops, '{:.0f}')} GFLOP/s, "
            f"{figure(100 * b.median_gflops / peak_gflops, '{:.0f}%')} of the peak."]


def _row_targets(row_key: str, *measures: str) -> str:
    """A row's targets of these measures in words, e.g. '<= 1x, < 2.5 GB'."""
    return ", ".join(t.wording() for t in targets_of(row_key, *measures))


def _measured(target: Target, res: RowResult, peak_gflops: float) -> str:
    """What a row achieved on a target's measure, in the target's unit."""
    if target.measure == SPEED_UP:
        return figure(res.speed_up(), "{:.2f}x")
    if target.measure == MEMORY_RATIO:
        return figure(res.memory_ratio(), "{:.2f}x")
    if target.measure == PEAK_MEMORY:
        return gigabytes(res.peak("ours"))
    stage = next(st for st in res.row.stages if st.name == target.stage)
    rate = stage_rate(res, stage, "ours")
    return figure(rate and 100 * rate / peak_gflops, "{:.0f}%")


def targets_table(results: list[RowResult], peak_gflops: float, help_median: Optional[float]) -> list[str]:
    """One line per target of this run: what it asks, what each row measured, and the verdict."""
    by_key = {res.row.key: res for res in results}
    lines = ["| target | asks | measured | verdict |", "|---|---|---|---|"]
    for target in TARGETS:
        if target is HELP_TARGET:
            measured, met = f"{figure(help_median, '{:.3f}')} s", [help_met(help_median)]
        else:
            rows = [by_key[k] for k in target.rows if k in by_key]
            if not rows:
                continue
            measured = ", ".join(f"{res.row.key} {_measured(target, res, peak_gflops)}" for res in rows)
            met = [target_met(target, res, peak_gflops) for res in rows]
        verdict = "n/a" if any(m is None for m in met) else ("PASS" if all(met) else "MISS")
        asks = target.wording() if target.stage is None else f"{target.stage} {target.wording()} of the peak"
        lines.append(f"| {target.name} | {asks} | {measured} | {verdict} |")
    return lines


def render(results: list[RowResult], peak: dict[str, tuple[float, float]], help_times: dict[str, list[float]],
           args: argparse.Namespace, sizes: Sizes, machine: list[str], started: datetime, elapsed: float,
           command: str) -> str:
    """The markdown report."""
    peak_gflops = max(best for best, _ in peak.values())
    mode = "QUICK (tiny configs: checks the harness only; the figures mean nothing)" if args.quick else \
        "full-size configs of the six checkpoints, random weights"
    gflops = "{:.0f}"
    lines = [
        "# Benchmarks: perceiver_cli vs transformers",
        "",
        f"Written by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')} ({elapsed / 60:.1f} min); {mode}.",
        "",
        *[f"- {m}" for m in machine],
        f"- fp32 matmul peak, measured at the start and again at the end of this run (best of repeated "
        f"square products for at least {args.seconds:g} s each, by torch's default BLAS and, on "
        f"the CPU, also by oneDNN; the ceiling is the best of all): **{figure(peak_gflops, gflops)} GFLOP/s** "
        f"({', '.join(f'{n}: {figure(g, gflops)}' for n, (g, _) in peak.items())}). Sustained (all those "
        f"products' FLOPs over their total time): "
        f"{', '.join(f'{n}: {figure(g, gflops)}' for n, (_, g) in peak.items())}; "
        "the gap between best and sustained is how much other work on the machine slowed products down.",
        f"- ours: perceiver_cli with `--numerics {args.numerics}`; transformers: its Perceiver classes; same "
        "weights (seeded per key; checksums compared), same inputs, fp32, device "
        f"{args.device}. Times are medians of {args.repeats} repeat(s), the two sides alternating; "
        "each measurement in its own process; peak RSS is that process's VmHWM (model, inputs, work). Rows "
        f"ending `{BF16_SUFFIX}` run ours in bfloat16 against ours in float32: there the transformers columns "
        "(time, peak RSS, speed-up, memory ratio, outputs) hold our own float32 side.",
        "",
        "## Tasks",
        "",
        "| task | unit of work | ours s | transformers s | speed-up (target) | ours peak RSS | transformers peak RSS "
        "| memory ratio (target) | ours GFLOP/s (% of peak) | outputs differ by | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    misses = []
    for res in results:
        row = res.row
        v = verdicts(res, peak_gflops)
        ours_t, theirs_t = res.median("ours"), res.median("transformers")
        rate = res.flops["total"][0] / ours_t / 1e9 if ours_t else None
        theirs_cell = figure(theirs_t, "{:.1f}" if (theirs_t or 0) >= 10 else "{:.2f}")
        if res.notes.get("transformers"):
            theirs_cell += f" ({res.notes['transformers']})"
        verdict = f"time {v['time']}, memory {v['memory']}"
        if res.errors:
            verdict = "ERROR: " + "; ".join(res.errors)
        lines.append(
            f"| {row.key} | {row.unit(sizes, res.flops.get('window'))} | {figure(ours_t)} | {theirs_cell} | "
            f"{figure(res.speed_up(), '{:.2f}x')} ({_row_targets(row.key, SPEED_UP)}) | "
            f"{gigabytes(res.peak('ours'))} | {gigabytes(res.peak('transformers'))} | "
            f"{figure(res.memory_ratio(), '{:.2f}x')} ({_row_targets(row.key, MEMORY_RATIO, PEAK_MEMORY)}) | "
            f"{figure(rate, gflops)} ({figure(rate and 100 * rate / peak_gflops, '{:.0f}%')}) | "
            f"{figure(res.agreement(), '{:.1e}')} | {verdict} |")
        if "MISS" in v.values() or res.errors:
            misses.append((res, [k for k, x in v.items() if x == "MISS"]))
    medians = {command: statistics.median(times) for command, times in help_times.items() if times}
    slowest = max(medians, key=medians.get) if medians else None
    help_median = medians[slowest] if slowest else None
    met = help_met(help_median)
    help_verdict = "n/a" if met is None else ("PASS" if met else "MISS")
    rounds = max((len(times) for times in help_times.values()), default=0)
    lines += [
        "",
        f"`perceiver --help` and every subcommand's --help ({len(medians)} commands, {rounds} fresh processes "
        f"each): slowest median {figure(help_median, '{:.3f}')} s (`{slowest}`), "
        f"target {HELP_TARGET.wording()}: **{help_verdict}**.",
        "",
        "Speed-up = transformers' time / ours; memory ratio = ours / transformers' peak RSS. "
        "'outputs differ by' = max |ours - transformers| / max |transformers| over compared outputs "
        "(fill-mask: byte log-probabilities at the masked positions of the first text; classify: top-5 softmax "
        "scores; flow: pixels; autoencode: first chunk's pixels and audio, label logits).",
        "",
        "## Targets",
        "",
        "Each target of benchmarks/targets.py, what this run measured for it and the verdict (PASS only when "
        "every row it covers meets it).",
        "",
        *targets_table(results, peak_gflops, help_median),
        "",
        "## Heavy stages: FLOPs from the configs, achieved rate against the measured peak",
        "",
        "FLOPs count matrix products only (2 per multiply-add), from the layer sizes of each config "
        "(benchmarks/flops.py). 'ours' counts what our core computes (its exact-algebra folds skip some "
        "projections); 'transformers' counts the network as written, for transformers' own unit of work "
        "(all 2048 positions decoded, 128 encoder runs per clip, ...). Stage times come from forward hooks "
        "on the encoder modules; 'decode' is the task time minus the encoder time.",
        "",
        "'kernel bound': the most this stage could reach with torch's kernels on this machine "
        "(benchmarks/bound.py): each product of one latent stack layer timed alone, at its sizes and rows per "
        "pass, by its fastest kernel here, at its best moment, norms and GELU left out; for the whole forward, "
        "that stack at its bound and everything else at the peak. A target above it cannot be met here.",
        "",
        "| task | stage | GFLOP ours | GFLOP transformers | ours s | ours GFLOP/s | % of peak | transformers "
        "GFLOP/s | kernel bound GFLOP/s (% of peak) | target | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for st in res.row.stages:
            ours_rate, theirs_rate = stage_rate(res, st, "ours"), stage_rate(res, st, "transformers")
            share = stage_target(res.row.key, st)
            target = f">= {share:.0%}" if share else "none"
            bound = stage_bound(res, st, peak_gflops)
            bound_cell = "" if bound is None else \
                f"{figure(bound, gflops)} ({figure(100 * bound / peak_gflops, '{:.0f}%')})"
            lines.append(
                f"| {res.row.key} | {st.label} | {figure(stage_flops(res, st, 'ours') / 1e9, '{:.1f}')} | "
                f"{figure(stage_flops(res, st, 'transformers') / 1e9, '{:.1f}')} | "
                f"{figure(res.stage_median('ours', st.name))} | {figure(ours_rate, gflops)} | "
                f"{figure(ours_rate and 100 * ours_rate / peak_gflops, '{:.0f}%')} | {figure(theirs_rate, gflops)} | "
                f"{bound_cell} | {target} | {stage_verdict(res, st, peak_gflops)} |")
    lines += ["", "## Targets missed, and where our time goes", ""]
    if not misses:
        lines.append("Every target was met in this run.")
    for res, which in misses:
        lines.append(f"### {res.row.key}: {', '.join(which) or 'error'}")
        lines.append("")
        if res.errors:
            lines += [f"- error: {e}" for e in res.errors]
        stage_times = {k: res.stage_median("ours", k) for k in
                       ("encoder cross-attention", LATENT_STACK, "encoder", "model forward")}
        total = res.median("ours")
        if total:
            parts = ", ".join(f"{k} {figure(t)} s ({figure(100 * t / total, '{:.0f}%')})"
                              for k, t in stage_times.items() if t)
            lines.append(f"- our {figure(total)} s: {parts}.")
        if any(stage_target(res.row.key, st) and st.label in which for st in res.row.stages):
            lines += bound_lines(res, peak_gflops)
        if "memory" in which:
            for side in SIDES:
                peak_side, built = res.peak(side), max(res.rss_model[side], default=None)
                if peak_side and built:
                    lines.append(f"- {side}: peak RSS {gigabytes(peak_side)} = {gigabytes(built)} after building "
                                 f"the model (runtime + weights) + {gigabytes(peak_side - built)} during the work.")
            floor = ratio(max(res.rss_model["ours"], default=None), res.peak("transformers"))
            limit = min((t.limit for t in targets_of(res.row.key, MEMORY_RATIO)), default=None)
            if floor is not None and limit is not None and floor > limit:
                lines.append(f"- floor: our process holds {floor:.2f}x transformers' peak before any work "
                             f"(interpreter, torch and the same fp32 weights), above the {limit:g}x "
                             "target, so no change to the work alone can meet it; the work's own memory ratio is in "
                             "the details.")
        if res.profile:
            unit = f" (profiled unit: {res.profile_unit})" if res.profile_unit else ""
            lines += ["", f"torch.profiler, one run of ours after a warm-up{unit}, top ops by self CPU time:", "",
                      "| op | self s | share | calls |", "|---|---|---|---|"]
            lines += [f"| `{p['op']}` | {figure(p['self_s'], '{:.3f}')} | {figure(100 * p['share'], '{:.1f}%')} | "
                      f"{p['calls']} |" for p in res.profile]
        lines.append("")
    lines += ["## Per-side details", "",
              "Other work on a shared machine only slows a run down, so the best time of each side is also shown "
              "(verdicts use medians). RSS after building the model = interpreter, libraries and weights; the "
              "work's own memory is the peak above it.", "",
              "| task | side | times s | best s | speed-up of bests | peak RSS | RSS after building the model | "
              "added by the work | work memory ratio | weights checksum |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        added = {}
        for side in SIDES:
            built = max(res.rss_model[side], default=None)
            added[side] = res.peak(side) - built if res.peak(side) and built else None
        for side in SIDES:
            times = ", ".join(figure(t) for t in res.times[side])
            work_ratio = figure(ratio(added["ours"], added["transformers"]), "{:.2f}x") if side == "ours" else ""
            best = min(res.times[side], default=None)
            best_ratio = figure(ratio(min(res.times["transformers"], default=None), best), "{:.2f}x") \
                if side == "ours" else ""
            lines.append(f"| {res.row.key} | {side} | {times or 'n/a'} | {figure(best)} | {best_ratio} | "
                         f"{gigabytes(res.peak(side))} | {gigabytes(max(res.rss_model[side], default=None))} | "
                         f"{gigabytes(added[side])} | {work_ratio} | "
                         f"{', '.join(str(c) for c in sorted(res.checksums[side])) or 'n/a'} |")
    lines += ["", "## Reproduce", "", "```", command, "```", ""]
    return "\n".join(lines)
