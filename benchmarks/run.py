"""perceiver_cli against transformers' Perceiver IO, task by task, on the same random weights and inputs.

Usage: python -m benchmarks [--quick] [--tasks fill-mask,classify,flow,autoencode-video] [--repeats N]
                            [--threads N] [--device cpu|cuda] [--output PATH] [--no-profile]

Every measurement runs in a child process of its own (one side, one task, one repeat; sides alternate
within each task; a short task is timed a few times in each child), so each side's peak RSS (VmHWM of
that process) holds only its own model and work.
Weights are random, drawn per state_dict key from a seed, so both sides hold identical values without
ever loading the other side's library. The machine's fp32 matmul peak is measured at the start of the run;
FLOP counts come from benchmarks.flops (computed from the configs' layer sizes). With --quick, tiny
configs run, one child per side (repeats inside it), to keep the harness itself tested.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "RESULTS.md"
RESULT_MARKER = "BENCHMARK-RESULT "
SIDES = ("ours", "transformers")
WEIGHT_SEED = 1234
TOP_K = 5
FLOW_SCALE = 20.0  # transformers returns flow / 20; ours returns pixels
CHILD_TIMEOUT_S = 4 * 3600


# ----------------------------------------------------------------------------------------------------------
# What is measured: rows of the table, their units of work and their targets.

@dataclass(frozen=True)
class Sizes:
    """The units of work of one run mode (full size, or --quick)."""

    text_bytes: int
    span: int
    short_texts: int
    photos: int
    batch: int
    clip_chunks: int  # transformers' loop decodes a clip in this many chunks...
    clip_chunks_timed: int  # ...of which this many are run and timed
    help_repeats: int
    matmul_sizes: tuple[int, ...]


FULL = Sizes(text_bytes=200, span=8, short_texts=64, photos=32, batch=8, clip_chunks=128, clip_chunks_timed=3,
             help_repeats=7, matmul_sizes=(2048, 4096))
QUICK = Sizes(text_bytes=200, span=8, short_texts=16, photos=4, batch=2, clip_chunks=4, clip_chunks_timed=2,
              help_repeats=3, matmul_sizes=(512, 1024))


@dataclass(frozen=True)
class StageTarget:
    """A stage whose achieved GFLOP/s is reported; `target` is the fraction of the matmul peak to reach."""

    name: str  # a timed stage of the child (see StageTimer) or a derived one ("decode")
    label: str
    flops: tuple[str, ...]  # benchmarks.flops stage names summed for this stage
    target: Optional[float]


@dataclass(frozen=True)
class Row:
    """One line of the results table: a task, its unit of work, its targets."""

    key: str
    task: str
    kind: str
    min_speedup: float
    max_memory_ratio: float
    stages: tuple[StageTarget, ...]
    max_memory_bytes: Optional[float] = None
    warmup: bool = False
    inner_repeats: int = 1  # timed runs per child: more samples where a run is short and noise is large

    def unit(self, sizes: Sizes, window: Optional[tuple[int, int]] = None) -> str:
        """The unit of work in words."""
        if self.key == "fill-mask":
            return f"{sizes.text_bytes}-byte text, one {sizes.span}-byte span"
        if self.key == "fill-mask-batch":
            return f"{sizes.short_texts} short texts, one span each"
        if self.task == "classify":
            return f"{sizes.photos} photos, batch {sizes.batch}"
        if self.task == "flow":
            return f"one {window[0]}x{window[1]} window" if window else "one window"
        return "one clip, all outputs"


_ENC = ("encoder cross-attention",)
_SELF = ("latent self-attention",)
_ALL = ("encoder cross-attention", "latent self-attention", "decode", "input adapter")
_LANGUAGE_STAGES = (StageTarget("latent self-attention", "latent self-attention (26 layers)", _SELF, 0.70),
                    StageTarget("encoder cross-attention", "encoder cross-attention", _ENC, None),
                    StageTarget("decode", "decode + search (task time - encoder)", ("decode",), None))
_VISION_STAGES = (StageTarget("model forward", "model forward (issue 4: 80%)", _ALL, 0.80),
                  StageTarget("latent self-attention", "latent self-attention (48 layers)", _SELF, 0.70),
                  StageTarget("encoder cross-attention", "encoder cross-attention", _ENC, None))

ROWS: tuple[Row, ...] = (
    Row("fill-mask", "fill-mask", "language", 1.15, 0.7, _LANGUAGE_STAGES, warmup=True, inner_repeats=5),
    Row("fill-mask-batch", "fill-mask", "language", 1.15, 0.7, _LANGUAGE_STAGES),
    Row("classify-conv", "classify", "vision-conv", 1.1, 1.0, _VISION_STAGES),
    Row("classify-fourier", "classify", "vision-fourier", 1.1, 1.0, _VISION_STAGES),
    Row("classify-learned", "classify", "vision-learned", 1.1, 1.0, _VISION_STAGES),
    Row("flow", "flow", "flow", 2.5, 0.25,
        (StageTarget("model forward", "flow window (model forward)", _ALL, 0.70),
         StageTarget("latent self-attention", "latent self-attention (24 layers)", _SELF, 0.70),
         StageTarget("encoder cross-attention", "encoder cross-attention", _ENC, None),
         StageTarget("decode", "decode (forward - encoder)", ("decode", "input adapter"), None)),
        inner_repeats=2),
    Row("autoencode-video", "autoencode-video", "multimodal", 8.0, 1.0,
        (StageTarget("decode", "multimodal decode (task time - encoder)", ("decode",), 0.70),
         StageTarget("latent self-attention", "latent self-attention (8 layers)", _SELF, 0.70),
         StageTarget("encoder cross-attention", "encoder cross-attention", _ENC, None)),
        max_memory_bytes=2.5e9),
)
TASKS = ("fill-mask", "classify", "flow", "autoencode-video")


def select_rows(spec: Optional[str]) -> list[Row]:
    """Rows named by --tasks (task names or row keys, comma separated); all when None."""
    if not spec:
        return list(ROWS)
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    known = set(TASKS) | {r.key for r in ROWS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"benchmarks: unknown task(s) {', '.join(unknown)} (choose from {', '.join(sorted(known))})")
    return [r for r in ROWS if r.task in wanted or r.key in wanted]


# ----------------------------------------------------------------------------------------------------------
# Weights and inputs, identical on both sides.

def randomise(model: Any, seed: int = WEIGHT_SEED) -> None:
    """Fill every float parameter and buffer from a generator seeded by its key, so any model with the same
    state_dict keys and shapes gets the same values, in any order."""
    import torch

    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            gen = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
            noise = torch.randn(tensor.shape, generator=gen)
            if key.endswith("running_var"):
                value = noise.abs() * 0.2 + 0.5
            elif tensor.dim() >= 2:  # weights and tables: unit-variance outputs for unit-variance inputs
                value = noise / max(1, tensor[0].numel()) ** 0.5
            elif "layernorm" in key and key.endswith("weight") or key.endswith("batchnorm.weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.02 * noise
            tensor.copy_(value.to(tensor.dtype))


def checksum(model: Any) -> float:
    """Sum of all float state in float64, over sorted keys: equal on both sides when the weights are."""
    state = model.state_dict()
    return float(sum(float(state[k].double().sum()) for k in sorted(state) if state[k].is_floating_point()))


_WORDS = ("river stone light winter garden music letter window morning paper market bridge forest station "
          "table quiet green early small heavy bright old ancient narrow open slow careful simple").split()
_VERBS = "carried found opened painted watched followed crossed wrote kept moved".split()


def long_text(n_bytes: int) -> str:
    """A fixed ASCII text of exactly n_bytes bytes."""
    base = ("The old lighthouse keeper climbed the narrow stairs every evening, carrying a lamp and a notebook "
            "in which he wrote down the colour of the sea, the direction of the wind and the names of the ships "
            "that passed before the harbour lights came on. ")
    return (base * (n_bytes // len(base) + 1))[:n_bytes]


def long_text_span(sizes: Sizes) -> tuple[int, int]:
    """(start, length) of the masked bytes of the long text: a word with its leading space."""
    text = long_text(sizes.text_bytes)
    start = text.index(" ", sizes.text_bytes // 2)
    return start, sizes.span


def short_texts(count: int, seed: int = 7) -> list[tuple[str, int, int]]:
    """`count` short sentences (30-90 bytes) with one masked word each: (text, start, length)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 9))]
        words.insert(rng.randint(1, len(words) - 1), rng.choice(_VERBS))
        text = "The " + " ".join(words) + "."
        pick = rng.randrange(1, len(words) + 1)
        start = len(" ".join((["The"] + words)[:pick]))  # the space before word `pick`
        length = len(words[pick - 1]) + 1
        out.append((text, start, length))
    return out


def masked(text: str, start: int, length: int) -> str:
    """The text with bytes [start, start+length) written as one [MASK:n] (ASCII texts only)."""
    return f"{text[:start]}[MASK:{length}]{text[start + length:]}"


def prepare_photos(folder: Path, count: int) -> list[Path]:
    """`count` photo files in `folder`: the shared test photos repeated, or generated ones without them."""
    sources = sorted((SHARED_DATA / "images").glob("*")) if (SHARED_DATA / "images").is_dir() else []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        if sources:
            src = sources[i % len(sources)]
            path = folder / f"{i:03d}_{src.name}"
            shutil.copyfile(src, path)
        else:
            import numpy as np
            from PIL import Image

            rng = np.random.default_rng(i)
            path = folder / f"{i:03d}_generated.jpg"
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def flow_frames(height: int, width: int):
    """Two consecutive uint8 frames (H, W, 3): a crop of the shared Sintel pair, or smooth synthetic ones."""
    import numpy as np

    folder = SHARED_DATA / "flow" / "sintel_alley_1"
    names = ("frame_0002.png", "frame_0003.png")
    if all((folder / n).is_file() for n in names):
        from PIL import Image

        frames = [np.asarray(Image.open(folder / n).convert("RGB")) for n in names]
        if frames[0].shape[0] >= height and frames[0].shape[1] >= width:
            return [np.ascontiguousarray(f[:height, :width]) for f in frames]
    y, x = np.mgrid[0:height, 0:width]
    base = [(128 + 100 * np.sin((x + 2 * t) / 9.0) * np.cos((y + t) / 13.0)) for t in (0, 1)]
    return [np.repeat(b[..., None], 3, axis=2).astype(np.uint8) for b in base]


def clip_arrays(spec: Any):
    """One clip: frames (T, H, W, 3) float32 in [0, 1] and audio (S,) float32 in [-1, 1], seeded."""
    import numpy as np

    t, h, w = spec.output_shape[1:4]
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    frames = np.stack([0.5 + 0.4 * np.sin(6 * xx + 0.3 * i)[..., None] * np.ones(3) for i in range(t)])
    frames = np.clip(frames + 0.05 * rng.standard_normal(frames.shape), 0, 1).astype(np.float32)
    n = spec.num_frames * spec.audio_samples_per_frame
    audio = (0.5 * np.sin(np.arange(n) * 2 * np.pi * 440 / 48000) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    return frames, audio


# ----------------------------------------------------------------------------------------------------------
# The child: build one side's model, run its workload, time it and its stages, report peak memory.

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


@dataclass
class Workload:
    """One side's unit of work: `run` is timed; `fingerprint` turns its result into numbers to compare."""

    run: Callable[[], Any]
    fingerprint: Callable[[Any], list[float]]
    scale: float = 1.0  # measured time x scale = the unit of work's time (transformers' clip loop)
    note: str = ""


def build(kind: str, config: dict, side: str, numerics: str, device: str):
    """One side's model of a config with the seeded random weights, eval mode, on the device."""
    import torch

    if side == "ours":
        from perceiver_cli.core import build_model, spec_from_config

        model = build_model(spec_from_config(config), numerics)
    else:
        import transformers

        model = getattr(transformers, config["architectures"][0])(transformers.PerceiverConfig(**config))
    randomise(model)
    return model.eval().requires_grad_(False).to(torch.device(device))


def _spec(config: dict):
    from perceiver_cli.core import spec_from_config

    return spec_from_config(config)


def fill_mask_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str) -> Workload:
    """fill-mask: ours runs core.text.fill_masks (exact top-k); transformers runs the documented
    tokenizer + PerceiverForMaskedLM loop, one text at a time, padded to max_length, argmax per byte."""
    import torch

    spec = _spec(config)
    if row.key == "fill-mask":
        start, length = long_text_span(sizes)
        items = [(long_text(sizes.text_bytes), start, length)]
    else:
        items = short_texts(sizes.short_texts)
    first_text, first_start, first_len = items[0]

    def byte_log_probs_theirs(logits: torch.Tensor) -> list[float]:
        return torch.log_softmax(logits.float(), -1)[..., 6:262].flatten().tolist()

    if side == "ours":
        from perceiver_cli.core.text import byte_log_probs, fill_masks
        from perceiver_cli.io.text import parse_masked_text

        texts = [masked(t, s, n) for t, s, n in items]

        def run():
            parsed = [parse_masked_text(t) for t in texts]
            return fill_masks(model, [(p.piece_bytes(), p.masks) for p in parsed], TOP_K, 12)

        def fingerprint(_result) -> list[float]:
            import numpy as np

            ids = np.frombuffer(first_text.encode(), dtype=np.uint8).astype(np.int64) + 6
            ids[first_start:first_start + first_len] = 3
            positions = np.arange(first_start, first_start + first_len)
            return byte_log_probs(model, [(ids, positions)])[0].flatten().tolist()

        return Workload(run, fingerprint)

    import transformers

    tokenizer = transformers.PerceiverTokenizer()
    width = spec.max_position_embeddings

    def run():
        out = []
        for text, start, length in items:
            enc = tokenizer(text, add_special_tokens=False, padding="max_length", max_length=width,
                            return_tensors="pt")
            enc["input_ids"][0, start:start + length] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            span = logits[0, start:start + length]
            out.append((tokenizer.decode(span.argmax(-1).tolist()), span))
        return out

    return Workload(run, lambda result: byte_log_probs_theirs(result[0][1]))


def classify_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str,
                      photos: list[Path]) -> Workload:
    """classify: ours runs the command's pipeline (prefetching decode threads, batches); transformers runs
    PerceiverImageProcessorPil + the model one image at a time."""
    import torch

    def fingerprint(result) -> list[float]:
        return [float(s) for scores in result for s in sorted(scores, reverse=True)]

    if side == "ours":
        from concurrent.futures import ThreadPoolExecutor

        from perceiver_cli.core.vision import classify_pixels, prefetch_batches, preprocess_image
        from perceiver_cli.io.images import read_image

        try:  # the command's own settings, so the pipeline measured is the one users run
            from perceiver_cli.commands.classify import BATCHES_AHEAD, _decode_workers
        except ImportError:
            BATCHES_AHEAD, _decode_workers = 2, (lambda device_type: 1)

        def prepare(path: Path, out) -> None:
            preprocess_image(read_image(path), out)

        def run():
            scores_out = []
            with ThreadPoolExecutor(max_workers=_decode_workers(torch.device(device).type)) as executor:
                for batch in prefetch_batches(photos, prepare, sizes.batch, executor, ahead=BATCHES_AHEAD):
                    if batch.errors:
                        raise next(iter(batch.errors.values()))
                    scores, _ = classify_pixels(model, batch.pixels, TOP_K)
                    scores_out.extend(list(row_scores) for row_scores in scores)
            return scores_out

        return Workload(run, fingerprint)

    from PIL import Image
    from transformers import PerceiverImageProcessorPil

    processor = PerceiverImageProcessorPil()

    def run():
        scores_out = []
        for path in photos:
            image = Image.open(path).convert("RGB")
            pixels = processor(images=image, return_tensors="pt").pixel_values
            with torch.no_grad():
                logits = model(pixel_values=pixels.to(device)).logits
            scores_out.append(torch.softmax(logits[0], -1).topk(TOP_K).values.tolist())
        return scores_out

    return Workload(run, fingerprint)


def flow_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str) -> Workload:
    """flow: one window; ours runs core.flow.FlowEstimator on uint8 frames; transformers gets the same
    frames as 3x3 patches (F.unfold, DeepMind's channel order) and PerceiverForOpticalFlow."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    h, w = _spec(config).train_size
    frame1, frame2 = flow_frames(h, w)

    def fingerprint(flow) -> list[float]:
        return flow.reshape(-1)[::97].tolist()

    if side == "ours":
        from perceiver_cli.core.flow import FlowEstimator

        first, second = torch.from_numpy(frame1), torch.from_numpy(frame2)

        def run():
            return FlowEstimator(model, batch_size=1)(first, second)

        return Workload(run, fingerprint)

    pair = np.stack([frame1, frame2])

    def run():
        x = torch.from_numpy(pair).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0  # (2, 3, H, W)
        patches = F.unfold(x, kernel_size=3, padding=1).reshape(2, 3, 9, h, w).transpose(1, 2).reshape(1, 2, 27, h, w)
        with torch.no_grad():
            out = model(inputs=patches.to(device)).logits
        return (out[0] * FLOW_SCALE).cpu()

    return Workload(run, fingerprint)


def autoencode_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str) -> Workload:
    """autoencode-video: ours encodes the clip once and decodes every output (core.autoencode); transformers
    runs its documented loop, which re-encodes for each of `clip_chunks` chunks: `clip_chunks_timed` chunks
    are timed and the time is scaled to all of them."""
    import torch

    spec = _spec(config)
    frames, audio = clip_arrays(spec)
    t, h, w = spec.output_shape[1:4]
    chunks = sizes.clip_chunks
    image_chunk = t * h * w // chunks
    audio_chunk = audio.shape[0] // spec.samples_per_patch // chunks

    if side == "ours":
        from perceiver_cli.core.autoencode import autoencode_clip

        video, sound = torch.from_numpy(frames), torch.from_numpy(audio)

        def run():
            return autoencode_clip(model, video, sound, device=torch.device(device))

        def fingerprint(result) -> list[float]:
            v = result.video.reshape(-1, 3)[:image_chunk].reshape(-1)[::7].tolist()
            a = result.audio[:audio_chunk * spec.samples_per_patch].tolist()
            return v + a + result.label_logits.tolist()

        return Workload(run, fingerprint)

    inputs = dict(image=torch.from_numpy(frames).permute(0, 3, 1, 2)[None].to(device),
                  audio=torch.from_numpy(audio)[None, :, None].to(device),
                  label=torch.zeros(1, spec.num_labels, device=device))

    def run():
        outputs = []
        for k in range(sizes.clip_chunks_timed):
            subsampling = {"image": torch.arange(image_chunk * k, image_chunk * (k + 1)),
                           "audio": torch.arange(audio_chunk * k, audio_chunk * (k + 1)), "label": None}
            with torch.no_grad():
                outputs.append(model(inputs=inputs, subsampled_output_points=subsampling).logits)
        return outputs

    def fingerprint(outputs) -> list[float]:
        first = outputs[0]
        v = first["image"][0].clamp(0, 1).reshape(-1)[::7].tolist()
        a = first["audio"][0].clamp(-1, 1).reshape(-1).tolist()
        return v + a + first["label"][0].tolist()

    return Workload(run, fingerprint, scale=chunks / sizes.clip_chunks_timed,
                    note=f"{sizes.clip_chunks_timed} of {chunks} chunks timed, x{chunks / sizes.clip_chunks_timed:g}")


def workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str,
             photos: list[Path]) -> Workload:
    """The workload of a row for one side."""
    if row.task == "fill-mask":
        return fill_mask_workload(row, model, side, config, sizes, device)
    if row.task == "classify":
        return classify_workload(row, model, side, config, sizes, device, photos)
    if row.task == "flow":
        return flow_workload(row, model, side, config, sizes, device)
    return autoencode_workload(row, model, side, config, sizes, device)


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

    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    from benchmarks.bound import synchronizer
    from benchmarks.configs import configs

    cfgs = configs(args.quick)
    photos = sorted(Path(args.photos).iterdir()) if args.photos else []
    cuda = args.device.startswith("cuda")
    sync = synchronizer(args.device)
    for key in args.child.split(","):
        row = next(r for r in ROWS if r.key == key)
        if row.task == "classify" and args.profile:
            photos_used = photos[:sizes.batch]
        else:
            photos_used = photos
        gc.collect()
        peak_reset = _reset_peak_rss()
        rss_start = _vm_kb("VmRSS") * 1024
        model = build(row.kind, cfgs[row.kind], args.side, args.numerics, args.device)
        rss_model = _vm_kb("VmRSS") * 1024
        timer = StageTimer(model, sync)
        texts_for_profile = sizes if not (args.profile and row.key == "fill-mask-batch") else Sizes(
            **{**sizes.__dict__, "short_texts": max(1, sizes.short_texts // 4)})
        work = workload(row, model, args.side, cfgs[row.kind], texts_for_profile, args.device, photos_used)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result: dict[str, Any] = {"row": key, "side": args.side, "note": work.note, "scale": work.scale,
                                  "checksum": checksum(model), "threads": torch.get_num_threads()}
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


# ----------------------------------------------------------------------------------------------------------
# The parent: machine peak, children, FLOPs, verdicts, report.

def matmul_peak(sizes: tuple[int, ...], threads: int, device: str, min_seconds: float = 6.0,
                tries: int = 3) -> dict[str, tuple[float, float]]:
    """fp32 GFLOP/s of square matrix products of each size on `threads` threads, by each engine torch
    offers here (its default BLAS; on the CPU also oneDNN, which our dense layers use on some CPUs):
    at least `tries` products and `min_seconds` of them per size and engine. Keys: "<size> <engine>";
    values: (best: the fastest product, since other work on a shared machine only ever slows one down;
    sustained: all the products' FLOPs over their total time)."""
    import torch

    from benchmarks.bound import call_seconds, synchronizer
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
        row.key, sizes.batch if row.task == "classify" else 1)
    return stack_rows(batch, _spec(config).num_latents, torch.device(device))


def measure_bounds(results: list[RowResult], cfgs: dict, sizes: Sizes, device: str, min_seconds: float) -> None:
    """Set each row's kernel bound (benchmarks.bound), measuring each distinct stack shape once."""
    from benchmarks import flops
    from benchmarks.bound import stack_bound

    done: dict[tuple, Any] = {}
    for res in results:
        config = cfgs[res.row.kind]
        dims = flops.layer_dims(flops.meta_model(config).perceiver.encoder.self_attends[0])
        key = (dims, stack_rows_of(res.row, config, sizes, device), _spec(config).num_latents)
        if key not in done:
            print(f"benchmarks: kernel bound of a {key[1]} x {key[2]}-latent stack layer", file=sys.stderr, flush=True)
            done[key] = stack_bound(*key, device=device, min_seconds=min_seconds)
        res.bound = done[key]


def help_time(repeats: int) -> list[float]:
    """Wall times of `perceiver --help` in fresh processes (one untimed run first, to warm file caches)."""
    exe = shutil.which("perceiver") or str(Path(sys.executable).parent / "perceiver")
    cmd = [exe, "--help"] if Path(exe).exists() else [sys.executable, "-m", "perceiver_cli", "--help"]
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:
            times.append(time.perf_counter() - start)
    return times


def run_child(rows: list[str], side: str, args: argparse.Namespace, photos_dir: Path, inner_repeats: int,
              profile: bool = False) -> tuple[list[dict], Optional[str]]:
    """Run a child process; its per-row results, or an error message."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", ",".join(rows), "--side", side,
           "--threads", str(args.threads), "--device", args.device, "--numerics", args.numerics,
           "--photos", str(photos_dir), "--inner-repeats", str(inner_repeats)]
    if args.quick:
        cmd.append("--quick")
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


@dataclass
class RowResult:
    """Everything measured for one row."""

    row: Row
    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    stages: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {s: [] for s in SIDES})
    peak_rss: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SIDES})
    rss_model: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SIDES})
    checksums: dict[str, set] = field(default_factory=lambda: {s: set() for s in SIDES})
    fingerprints: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    flops: dict[str, Any] = field(default_factory=dict)
    profile: Optional[list[dict]] = None
    profile_unit: str = ""
    bound: Optional[Any] = None  # benchmarks.bound.StackBound of the row's latent stack, rows per pass included

    def add(self, result: dict) -> None:
        """Fold one child's result for this row in."""
        side, scale = result["side"], result["scale"]
        self.times[side].extend(s * scale for s in result.get("seconds", []))
        self.stages[side].extend({k: v * scale for k, v in st.items()} for st in result.get("stages", []))
        self.peak_rss[side].append(result["peak_rss"])
        self.rss_model[side].append(result["rss_model"])
        self.checksums[side].add(round(result["checksum"], 3))
        if "fingerprint" in result:
            self.fingerprints[side] = result["fingerprint"]
        if result.get("note"):
            self.notes[side] = result["note"]

    def median(self, side: str) -> Optional[float]:
        """Median time of one side (None if it never ran)."""
        return statistics.median(self.times[side]) if self.times[side] else None

    def stage_median(self, side: str, stage: str) -> Optional[float]:
        """Median time of one stage (derived 'decode' = total - encoder, per repeat)."""
        values = []
        for total, st in zip(self.times[side], self.stages[side]):
            if stage == "decode":
                if "encoder" in st:
                    base = st["model forward"] if self.row.task == "flow" and "model forward" in st else total
                    values.append(base - st["encoder"])
            elif stage in st:
                values.append(st[stage])
        return statistics.median(values) if values else None

    def peak(self, side: str) -> Optional[int]:
        """Largest peak RSS of one side over its children."""
        return max(self.peak_rss[side]) if self.peak_rss[side] else None

    def agreement(self) -> Optional[float]:
        """max |ours - theirs| / max |theirs| over the compared outputs."""
        a, b = self.fingerprints.get("ours"), self.fingerprints.get("transformers")
        if not a or not b or len(a) != len(b):
            return None
        scale = max(abs(x) for x in b) or 1.0
        return max(abs(x - y) for x, y in zip(a, b)) / scale


def compute_flops(row: Row, config: dict, sizes: Sizes, numerics: str, device: str = "cpu") -> dict[str, Any]:
    """Per-stage FLOPs of the row's unit of work for ours and for transformers (benchmarks.flops)."""
    import torch

    from benchmarks import flops

    model = flops.meta_model(config, numerics)
    if row.task == "fill-mask":
        from perceiver_cli.core import text as core_text

        width = model.spec.max_position_embeddings
        if row.key == "fill-mask":
            items = [(sizes.text_bytes, long_text_span(sizes)[1])]
        else:
            items = [(len(t), n) for t, _, n in short_texts(sizes.short_texts)]
        # ours pads a batch to its longest text and its most masked positions (core.text.byte_log_probs)
        order = sorted(items, key=lambda x: -x[0])
        padded: list[tuple[int, int]] = []
        batch: list[tuple[int, int]] = []
        rows_max = getattr(core_text, "MAX_BATCH_ROWS", 32)
        tokens_max = getattr(core_text, "MAX_BATCH_TOKENS", 16384)

        def flush() -> None:
            depth = max(m for _, m in batch)
            padded.extend((batch[0][0], depth) for _ in batch)

        for item in order:
            if batch and (len(batch) >= rows_max or (len(batch) + 1) * batch[0][0] > tokens_max):
                flush()
                batch = []
            batch.append(item)
        flush()
        stages = flops.language_stages(model, [n for n, _ in padded], [m for _, m in padded], width)
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


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def _fmt(x: Optional[float], pattern: str = "{:.2f}") -> str:
    return "n/a" if x is None else pattern.format(x)


def _gb(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / 1e9:.2f} GB"


def verdicts(res: RowResult, peak_gflops: float) -> dict[str, str]:
    """PASS/MISS of the time target, the memory target(s) and each stage target of a row."""
    row = res.row
    out: dict[str, str] = {}
    speedup = _ratio(res.median("transformers"), res.median("ours"))
    out["time"] = "n/a" if speedup is None else ("PASS" if speedup >= row.min_speedup else "MISS")
    mem = _ratio(res.peak("ours"), res.peak("transformers"))
    ok = mem is not None and mem <= row.max_memory_ratio
    if row.max_memory_bytes is not None and res.peak("ours") is not None:
        ok = ok and res.peak("ours") < row.max_memory_bytes
    out["memory"] = "n/a" if mem is None else ("PASS" if ok else "MISS")
    for st in row.stages:
        if st.target is None:
            continue
        rate = stage_rate(res, st, "ours")
        out[st.label] = "n/a" if rate is None else ("PASS" if rate >= st.target * peak_gflops else "MISS")
    return out


def stage_flops(res: RowResult, st: StageTarget, side: str) -> int:
    """FLOPs of one reported stage for one side (0 = ours, 1 = transformers in the flops tuples)."""
    index = 0 if side == "ours" else 1
    if st.name == "model forward":
        return res.flops["total"][index]
    return sum(res.flops["stages"].get(name, (0, 0))[index] for name in st.flops)


def stage_rate(res: RowResult, st: StageTarget, side: str) -> Optional[float]:
    """Achieved GFLOP/s of a stage for one side."""
    seconds = res.stage_median(side, st.name)
    if not seconds:
        return None
    return stage_flops(res, st, side) / seconds / 1e9


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


def stage_bound(res: RowResult, st: StageTarget, peak_gflops: float) -> Optional[float]:
    """The most GFLOP/s a stage could reach here with torch's kernels (benchmarks.bound): the latent stack's
    kernel bound, and for the whole forward, that stack at its bound with every other product at the peak."""
    if res.bound is None:
        return None
    if st.name == "latent self-attention":
        return res.bound.gflops
    if st.name == "model forward":
        total, stack = stage_flops(res, st, "ours"), res.flops["stages"]["latent self-attention"][0]
        return total / (stack / res.bound.gflops + (total - stack) / peak_gflops)
    return None


def stage_verdict(res: RowResult, st: StageTarget, peak_gflops: float) -> str:
    """verdicts()' word for a stage, saying so when the kernel bound itself is below the target."""
    verdict = verdicts(res, peak_gflops).get(st.label, "(information)")
    bound = stage_bound(res, st, peak_gflops)
    if verdict == "MISS" and bound is not None and bound < st.target * peak_gflops:
        return "MISS (the kernel bound is below the target)"
    return verdict


def bound_lines(res: RowResult, peak_gflops: float) -> list[str]:
    """The kernel bound of a row's latent stack, product by product, against what our stack achieved."""
    b = res.bound
    if b is None:
        return []
    parts = "; ".join(f"{k.product}: {k.gflops:.0f} GFLOP/s ({k.kernel})" for k in b.kernels)
    achieved = stage_rate(res, next(st for st in res.row.stages if st.name == "latent self-attention"), "ours")
    share = f"; our stack ran at {100 * achieved / b.gflops:.0f}% of it" if achieved else ""
    return [f"- kernel bound of one latent stack layer ({b.rows} x {b.num_latents} latents a pass), each product "
            f"alone at its best: {parts}. Together: {b.gflops:.0f} GFLOP/s, {100 * b.gflops / peak_gflops:.0f}% "
            f"of the peak{share}. At each product's median speed over the same calls instead of its best: "
            f"{b.median_gflops:.0f} GFLOP/s, {100 * b.median_gflops / peak_gflops:.0f}% of the peak."]


def peak_seconds(quick: bool) -> float:
    """Seconds of products per size and engine for the matmul peak, and per product for the kernel bound.
    --quick times nothing that counts, and its tiny products repeat thousands of times in a tenth of a
    second."""
    return 0.1 if quick else 6.0


def render(results: list[RowResult], peak: dict[str, tuple[float, float]], help_times: list[float], args: argparse.Namespace,
           sizes: Sizes, machine: list[str], started: datetime, elapsed: float, command: str) -> str:
    """The markdown report."""
    peak_gflops = max(best for best, _ in peak.values())
    mode = "QUICK (tiny configs: checks the harness only; the figures mean nothing)" if args.quick else \
        "full-size configs of the six checkpoints, random weights"
    lines = [
        "# Benchmarks: perceiver_cli vs transformers",
        "",
        f"Written by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')} ({elapsed / 60:.1f} min); {mode}.",
        "",
        *[f"- {m}" for m in machine],
        f"- fp32 matmul peak, measured at the start and again at the end of this run (best of repeated "
        f"square products for at least {args.seconds:g} s each, by torch's default BLAS and, on "
        f"the CPU, also by oneDNN; the ceiling is the best of all): **{peak_gflops:.0f} GFLOP/s** "
        f"({', '.join(f'{n}: {g:.0f}' for n, (g, _) in peak.items())}). Sustained (all those "
        f"products' FLOPs over their total time): {', '.join(f'{n}: {g:.0f}' for n, (_, g) in peak.items())}; "
        "the gap between best and sustained is how much other work on the machine slowed products down.",
        f"- ours: perceiver_cli with `--numerics {args.numerics}`; transformers: its Perceiver classes; same "
        "weights (seeded per key; checksums compared), same inputs, fp32, device "
        f"{args.device}. Times are medians of {args.repeats} repeat(s), the two sides alternating; "
        "each measurement in its own process; peak RSS is that process's VmHWM (model, inputs, work).",
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
        speedup = _ratio(theirs_t, ours_t)
        mem = _ratio(res.peak("ours"), res.peak("transformers"))
        rate = res.flops["total"][0] / ours_t / 1e9 if ours_t else None
        mem_target = f"<= {row.max_memory_ratio:g}x" + (f", < {row.max_memory_bytes / 1e9:g} GB"
                                                         if row.max_memory_bytes else "")
        theirs_cell = _fmt(theirs_t, "{:.1f}" if (theirs_t or 0) >= 10 else "{:.2f}")
        if res.notes.get("transformers"):
            theirs_cell += f" ({res.notes['transformers']})"
        agree = res.agreement()
        verdict = f"time {v['time']}, memory {v['memory']}"
        if res.errors:
            verdict = "ERROR: " + "; ".join(res.errors)
        lines.append(
            f"| {row.key} | {row.unit(sizes, res.flops.get('window'))} | {_fmt(ours_t)} | {theirs_cell} | "
            f"{_fmt(speedup, '{:.2f}x')} (>= {row.min_speedup:g}x) | {_gb(res.peak('ours'))} | "
            f"{_gb(res.peak('transformers'))} | {_fmt(mem, '{:.2f}x')} ({mem_target}) | "
            f"{_fmt(rate, '{:.0f}')} ({_fmt(rate and 100 * rate / peak_gflops, '{:.0f}%')}) | "
            f"{_fmt(agree, '{:.1e}')} | {verdict} |")
        if "MISS" in v.values() or res.errors:
            misses.append((res, [k for k, x in v.items() if x == "MISS"]))
    help_median = statistics.median(help_times) if help_times else None
    help_verdict = "n/a" if help_median is None else ("PASS" if help_median < 0.3 else "MISS")
    lines += [
        "",
        f"`perceiver --help`: median {_fmt(help_median, '{:.3f}')} s over {len(help_times)} fresh processes "
        f"(target < 0.3 s): **{help_verdict}**.",
        "",
        "Speed-up = transformers' time / ours; memory ratio = ours / transformers' peak RSS. "
        "'outputs differ by' = max |ours - transformers| / max |transformers| over compared outputs "
        "(fill-mask: byte log-probabilities at the masked positions of the first text; classify: top-5 softmax "
        "scores; flow: pixels; autoencode: first chunk's pixels and audio, label logits).",
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
            target = f">= {st.target:.0%}" if st.target else "none"
            bound = stage_bound(res, st, peak_gflops)
            bound_cell = "" if bound is None else f"{bound:.0f} ({100 * bound / peak_gflops:.0f}%)"
            lines.append(
                f"| {res.row.key} | {st.label} | {stage_flops(res, st, 'ours') / 1e9:.1f} | "
                f"{stage_flops(res, st, 'transformers') / 1e9:.1f} | {_fmt(res.stage_median('ours', st.name))} | "
                f"{_fmt(ours_rate, '{:.0f}')} | {_fmt(ours_rate and 100 * ours_rate / peak_gflops, '{:.0f}%')} | "
                f"{_fmt(theirs_rate, '{:.0f}')} | {bound_cell} | {target} | {stage_verdict(res, st, peak_gflops)} |")
    lines += ["", "## Targets missed, and where our time goes", ""]
    if not misses:
        lines.append("Every target was met in this run.")
    for res, which in misses:
        lines.append(f"### {res.row.key}: {', '.join(which) or 'error'}")
        lines.append("")
        if res.errors:
            lines += [f"- error: {e}" for e in res.errors]
        stage_times = {k: res.stage_median("ours", k) for k in
                       ("encoder cross-attention", "latent self-attention", "encoder", "model forward")}
        total = res.median("ours")
        if total:
            parts = ", ".join(f"{k} {t:.2f} s ({100 * t / total:.0f}%)" for k, t in stage_times.items() if t)
            lines.append(f"- our {total:.2f} s: {parts}.")
        if any(st.target and st.label in which for st in res.row.stages):
            lines += bound_lines(res, peak_gflops)
        if "memory" in which:
            for side in SIDES:
                peak_side, built = res.peak(side), max(res.rss_model[side], default=None)
                if peak_side and built:
                    lines.append(f"- {side}: peak RSS {_gb(peak_side)} = {_gb(built)} after building the model "
                                 f"(runtime + weights) + {_gb(peak_side - built)} during the work.")
            floor = _ratio(max(res.rss_model["ours"], default=None), res.peak("transformers"))
            if floor is not None and floor > res.row.max_memory_ratio:
                lines.append(f"- floor: our process holds {floor:.2f}x transformers' peak before any work "
                             f"(interpreter, torch and the same fp32 weights), above the {res.row.max_memory_ratio:g}x "
                             "target, so no change to the work alone can meet it; the work's own memory ratio is in "
                             "the details.")
        if res.profile:
            unit = f" (profiled unit: {res.profile_unit})" if res.profile_unit else ""
            lines += ["", f"torch.profiler, one run of ours after a warm-up{unit}, top ops by self CPU time:", "",
                      "| op | self s | share | calls |", "|---|---|---|---|"]
            lines += [f"| `{p['op']}` | {p['self_s']:.3f} | {100 * p['share']:.1f}% | {p['calls']} |"
                      for p in res.profile]
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
            times = ", ".join(f"{t:.2f}" for t in res.times[side])
            work_ratio = _fmt(_ratio(added["ours"], added["transformers"]), "{:.2f}x") if side == "ours" else ""
            best = min(res.times[side], default=None)
            best_ratio = _fmt(_ratio(min(res.times["transformers"], default=None), best), "{:.2f}x") \
                if side == "ours" else ""
            lines.append(f"| {res.row.key} | {side} | {times or 'n/a'} | {_fmt(best)} | {best_ratio} | "
                         f"{_gb(res.peak(side))} | "
                         f"{_gb(max(res.rss_model[side], default=None))} | {_gb(added[side])} | {work_ratio} | "
                         f"{', '.join(str(c) for c in sorted(res.checksums[side])) or 'n/a'} |")
    lines += ["", "## Reproduce", "", "```", command, "```", ""]
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """Command-line options (the --child ones are internal)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configs, about a minute: tests the harness only")
    p.add_argument("--tasks", default=None, help=f"comma-separated tasks or rows ({', '.join(TASKS)}); default all")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default 3, quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per side (default: usable CPUs)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; cuda falls back to cpu when absent")
    p.add_argument("--numerics", default="transformers", choices=("transformers", "deepmind"),
                   help="our side's numerics (default transformers: like for like)")
    p.add_argument("--output", default=None, help="report path (default benchmarks/RESULTS.md; with --quick, "
                                                    "a file in the temp directory)")
    p.add_argument("--no-profile", action="store_true", help="skip profiling the rows that miss a target")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds of products per size and engine for the matmul peak, and per product for the "
                        "kernel bound (default 6, quick 0.1; an accelerator needs far less)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", default="ours", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--photos", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inner-repeats", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        try:
            args.threads = len(os.sched_getaffinity(0))
        except AttributeError:
            args.threads = os.cpu_count() or 1
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1 or args.threads < 1:
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
    sizes = QUICK if args.quick else FULL
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
        prepare_photos(photos_dir, sizes.photos)
        by_key = {res.row.key: res for res in results}

        def absorb(out: list[dict], error: Optional[str], keys: list[str]) -> None:
            nonlocal failed
            for r in out:
                by_key[r["row"]].add(r)
                took = ", ".join(f"{t * r['scale']:.2f}" for t in r.get("seconds", []))
                print(f"benchmarks:   {r['row']} {r['side']}: {took} s, peak RSS {_gb(r['peak_rss'])}",
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
