"""What each task's two sides run: ours through perceiver_cli, transformers' through its Perceiver classes and
their documented pre- and post-processing, on the same seeded weights and the same inputs.

A workload is built inside a child process for one side; `run` is the part that is timed, `fingerprint`
turns its result into numbers the parent compares between the sides.
"""

from __future__ import annotations

import random
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.tasks import Row, Sizes

WEIGHT_SEED = 1234
TOP_K = 5
FLOW_SCALE = 20.0  # transformers returns flow / 20; ours returns pixels
REPO_PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "images"
SINTEL_PAIR = ("flow/sintel_alley_1/frame_0002.png", "flow/sintel_alley_1/frame_0003.png")


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


def prepare_photos(folder: Path, count: int, data: Optional[Path] = None) -> list[Path]:
    """`count` photo files in `folder`: the photos of `data`/images (else of the repository's tests/data/images)
    repeated, or generated ones where neither has any."""
    sources: list[Path] = []
    for images in ([data / "images"] if data else []) + [REPO_PHOTOS]:
        if images.is_dir():
            sources = sorted(p for p in images.iterdir() if p.is_file())
        if sources:
            break
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


def flow_frames(height: int, width: int, data: Optional[Path] = None):
    """Two consecutive uint8 frames (H, W, 3): a crop of Sintel's alley_1 frames 2 and 3 from `data` when
    there and large enough, else smooth synthetic ones."""
    import numpy as np

    paths = [data / name for name in SINTEL_PAIR] if data else []
    if paths and all(p.is_file() for p in paths):
        from PIL import Image

        frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
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
# Each task's two sides.

@dataclass
class Workload:
    """One side's unit of work: `run` is timed; `fingerprint` turns its result into numbers to compare."""

    run: Callable[[], Any]
    fingerprint: Callable[[Any], list[float]]
    scale: float = 1.0  # measured time x scale = the unit of work's time (transformers' clip loop)
    note: str = ""


def build(config: dict, side: str, numerics: str, device: str):
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


def spec_of(config: dict):
    """Our checkpoint spec of a config."""
    from perceiver_cli.core import spec_from_config

    return spec_from_config(config)


def fill_mask_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str,
                       dtype: str = "float32") -> Workload:
    """fill-mask: ours runs the command's task (exact top-k); transformers runs the documented
    tokenizer + PerceiverForMaskedLM loop, one text at a time, padded to max_length, argmax per byte."""
    import torch

    spec = spec_of(config)
    if row.key == "fill-mask":
        start, length = long_text_span(sizes)
        items = [(long_text(sizes.text_bytes), start, length)]
    else:
        items = short_texts(sizes.short_texts)
    first_text, first_start, first_len = items[0]

    def byte_log_probs_theirs(logits: torch.Tensor) -> list[float]:
        return torch.log_softmax(logits.float(), -1)[..., 6:262].flatten().tolist()

    if side == "ours":
        from perceiver_cli.core.text import byte_log_probs
        from perceiver_cli.runtime import resolve_runtime
        from perceiver_cli.tasks.fill_mask import FillMaskTask

        texts = [masked(t, s, n) for t, s, n in items]
        runtime = resolve_runtime(device, dtype, configure=False, cpu_batch_size=FillMaskTask.cpu_batch_size,
                                  accelerator_batch_size=FillMaskTask.accelerator_batch_size)

        def run():
            # the command's own task: parsing, batching and the exact top-k search
            task = FillMaskTask(texts, top_k=TOP_K, max_span=12)
            task.setup(runtime, model)
            return [result.record for result in task.run(task.items())]

        def fingerprint(_result) -> list[float]:
            import numpy as np

            ids = np.frombuffer(first_text.encode(), dtype=np.uint8).astype(np.int64) + 6
            ids[first_start:first_start + first_len] = 3
            positions = np.arange(first_start, first_start + first_len)
            return byte_log_probs(model, [(ids, positions)], device=runtime.device)[0].flatten().tolist()

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
                      photos: list[Path], dtype: str = "float32") -> Workload:
    """classify: ours runs the command's task (prefetching decode threads, batches); transformers runs
    PerceiverImageProcessorPil + the model one image at a time."""
    import torch

    def fingerprint(result) -> list[float]:
        return [float(s) for scores in result for s in sorted(scores, reverse=True)]

    if side == "ours":
        from perceiver_cli.runtime import resolve_runtime
        from perceiver_cli.tasks.base import Item
        from perceiver_cli.tasks.classify import ClassifyTask

        # the command's own task (decoding pool, prefetched batches); threads are the child's own (--threads)
        runtime = resolve_runtime(device, dtype, batch_size=sizes.batch, configure=False)
        task = ClassifyTask([], top_k=TOP_K)
        task.setup(runtime, model)

        def run():
            results = list(task.run(Item(i, str(path), data=path) for i, path in enumerate(photos)))
            failed = [r.record for r in results if not r.ok]
            if failed:
                raise RuntimeError(f"classify failed on {failed[0]}")
            return [[p["score"] for p in r.record["predictions"]] for r in results]

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


def flow_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str,
                  data: Optional[Path] = None, dtype: str = "float32") -> Workload:
    """flow: one window; ours runs core.flow.FlowEstimator on uint8 frames; transformers gets the same
    frames as 3x3 patches (F.unfold, DeepMind's channel order) and PerceiverForOpticalFlow."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    h, w = spec_of(config).train_size
    frame1, frame2 = flow_frames(h, w, data)

    def fingerprint(flow) -> list[float]:
        return flow.reshape(-1)[::97].tolist()

    if side == "ours":
        from perceiver_cli.core.flow import FlowEstimator

        first, second = torch.from_numpy(frame1), torch.from_numpy(frame2)

        def run():
            return FlowEstimator(model, batch_size=1, device=device, dtype=getattr(torch, dtype))(first, second)

        return Workload(run, fingerprint)

    pair = np.stack([frame1, frame2])

    def run():
        x = torch.from_numpy(pair).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0  # (2, 3, H, W)
        patches = F.unfold(x, kernel_size=3, padding=1).reshape(2, 3, 9, h, w).transpose(1, 2).reshape(1, 2, 27, h, w)
        with torch.no_grad():
            out = model(inputs=patches.to(device)).logits
        return (out[0] * FLOW_SCALE).cpu()

    return Workload(run, fingerprint)


def autoencode_workload(row: Row, model: Any, side: str, config: dict, sizes: Sizes, device: str,
                        dtype: str = "float32") -> Workload:
    """autoencode-video: ours encodes the clip once and decodes every output (core.autoencode); transformers
    runs its documented loop, which re-encodes for each of `clip_chunks` chunks: `clip_chunks_timed` chunks
    are timed and the time is scaled to all of them."""
    import torch

    spec = spec_of(config)
    frames, audio = clip_arrays(spec)
    t, h, w = spec.output_shape[1:4]
    chunks = sizes.clip_chunks
    image_chunk = t * h * w // chunks
    audio_chunk = audio.shape[0] // spec.samples_per_patch // chunks

    if side == "ours":
        from perceiver_cli.core.autoencode import autoencode_clip

        video, sound = torch.from_numpy(frames), torch.from_numpy(audio)

        def run():
            return autoencode_clip(model, video, sound, device=torch.device(device), dtype=getattr(torch, dtype))

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
             photos: list[Path], data: Optional[Path] = None, dtype: str = "float32") -> Workload:
    """The workload of a row for one side, ours in `dtype`."""
    if row.task == "fill-mask":
        return fill_mask_workload(row, model, side, config, sizes, device, dtype)
    if row.task == "classify":
        return classify_workload(row, model, side, config, sizes, device, photos, dtype)
    if row.task == "flow":
        return flow_workload(row, model, side, config, sizes, device, data, dtype)
    return autoencode_workload(row, model, side, config, sizes, device, dtype)
