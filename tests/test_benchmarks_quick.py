"""The benchmark harness keeps working: `python -m benchmarks --quick` completes and writes a well-formed
report, and its FLOP counts equal torch's own count of what each side computes. Nothing about time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import flops  # noqa: E402
from benchmarks.configs import FULL_CONFIGS, QUICK_CONFIGS  # noqa: E402
from benchmarks.harness import compute_flops, peak_seconds  # noqa: E402
from benchmarks.run import parse_args  # noqa: E402
from benchmarks.targets import TARGETS  # noqa: E402
from benchmarks.tasks import QUICK, ROWS, row_named  # noqa: E402
from benchmarks.workloads import build, workload  # noqa: E402

TASK_COLUMNS = 11


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _number(cell: str) -> float:
    """The number a report cell starts with ('1.2x (>= 1.1x)' -> 1.2, '0.31 GB' -> 0.31, '8%' -> 8)."""
    return float(cell.split()[0].rstrip("x%)"))


def _table(report: str, header_start: str) -> list[list[str]]:
    """The rows of the markdown table whose header starts with header_start, split into cells."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_quick_run_completes_and_writes_a_well_formed_report(tmp_path):
    output = tmp_path / "RESULTS.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = output.read_text(encoding="utf-8")
    assert report.strip() in proc.stdout
    tasks = _table(report, "| task | unit of work |")
    assert [cells[0] for cells in tasks] == [row.key for row in ROWS]
    for cells in tasks:
        assert len(cells) == TASK_COLUMNS
        assert "ERROR" not in cells[-1]
        assert cells[-1].startswith("time PASS") or cells[-1].startswith("time MISS")
        # both sides' medians, the speed-up, both peaks, the memory ratio and our rate: measured, so > 0
        assert _number(cells[2]) > 0 and _number(cells[3]) > 0 and _number(cells[4]) > 0
        assert cells[5].endswith(" GB") and cells[6].endswith(" GB")
        assert _number(cells[5]) > 0 and _number(cells[6]) > 0 and _number(cells[7]) > 0
        assert _number(cells[8]) > 0 and cells[8].endswith("%)") and _number(cells[8].split("(")[1]) > 0
        assert _number(cells[9]) >= 0  # the sides' outputs may agree exactly
    targets = _table(report, "| target | asks |")
    assert [cells[0] for cells in targets] == [t.name for t in TARGETS]
    assert all(cells[-1] in ("PASS", "MISS") for cells in targets)
    stages = _table(report, "| task | stage |")
    assert {cells[0] for cells in stages} == {row.key for row in ROWS}
    assert all(cells[-1] in ("PASS", "MISS", "(information)", "MISS (the kernel bound is below the target)")
               for cells in stages)
    for cells in stages:
        # FLOPs of both sides, our stage time and rate, its share of the peak, transformers' rate: all > 0
        assert all(_number(cell) > 0 for cell in cells[2:8]), cells
    # every latent stack and every whole forward has a kernel bound; other stages none
    for cells in stages:
        has_bound = cells[1].startswith(("latent self-attention", "model forward", "flow window"))
        assert bool(cells[8]) == has_bound, cells
        if has_bound:
            assert _number(cells[8]) > 0 and cells[8].endswith("%)"), cells
            assert _number(cells[8].split("(")[1]) > 0, cells
    assert "Sustained (all those products' FLOPs over their total time)" in report
    assert "At each product's median speed over the same calls instead of its best" in report
    assert "fp32 matmul peak, measured at the start and again at the end of this run" in report
    assert f"square products for at least {peak_seconds(True):g} s each" in report  # what --quick timed
    help_line = next(line for line in report.splitlines() if line.startswith("`perceiver --help` and every subcommand"))
    assert "(9 commands," in help_line and _number(help_line.split("slowest median ")[1]) > 0, help_line
    assert "python -m benchmarks --quick" in report  # the command that reproduces it


@pytest.mark.parametrize("kind", sorted(FULL_CONFIGS))
def test_our_flop_count_equals_torch_count_of_our_full_size_model(kind, monkeypatch):
    # Meta tensors: shapes only, so the full-size networks cost nothing to trace.
    from perceiver_cli.core import layers
    from perceiver_cli.core.autoencode import decode_clip

    # The count is of useful work: the multimodal decoder's zero-padded channels (1026 -> 1032) are left
    # out, so trace the network without that padding.
    monkeypatch.setattr(layers, "WIDTH_MULTIPLE", 1)

    model = flops.meta_model(FULL_CONFIGS[kind])
    meta = {"device": "meta"}
    if kind == "language":
        ids = torch.zeros(1, 200, dtype=torch.long, **meta)
        counted = _counted(lambda: model.decode(model.encode(ids), torch.arange(8, **meta)))
        stages = flops.language_stages(model, [200], [8], 2048)
    elif kind.startswith("vision"):
        counted = _counted(lambda: model(torch.empty(1, 3, 224, 224, **meta)))
        stages = flops.vision_stages(model, 1)
    elif kind == "flow":
        counted = _counted(lambda: model(torch.empty(1, 2, 27, 368, 496, **meta)))
        stages = flops.flow_stages(model)
    else:
        s = model.spec
        video = torch.empty(1, 16, 3, 224, 224, **meta)
        audio = torch.empty(1, s.num_frames * s.audio_samples_per_frame, **meta)
        counted = _counted(lambda: decode_clip(model, model.encode(video, audio)))
        stages = flops.multimodal_stages(model, 1, 128)
    # Matrix-vector products of a few folded biases are left out of our count: a few parts per million.
    assert flops.total(stages).ours == pytest.approx(counted, rel=1e-4)


def test_learned_position_projection_counted_once_a_call():
    # vision-learned projects its position embeddings once per forward call, whatever the batch
    model = flops.meta_model(FULL_CONFIGS["vision-learned"])
    counted = _counted(lambda: model(torch.empty(3, 3, 224, 224, device="meta")))  # one pass on meta
    assert flops.total(flops.vision_stages(model, 3, 3)).ours == pytest.approx(counted, rel=1e-4)
    assert flops.total(flops.vision_stages(model, 3, 1)).ours > counted * 1.01
    # 7 images in calls of 3 (3, 3, 1) and passes of 2 rows: 3 projections, 2 + 2 + 1 decoder heads
    seven = _counted(lambda: [model(torch.empty(n, 3, 224, 224, device="meta")) for n in (2, 1, 2, 1, 1)])
    assert flops.total(flops.vision_stages(model, 7, 3, 2)).ours == pytest.approx(
        seven - 2 * flops._preprocessor_flops(model)[1], rel=1e-4)


@pytest.mark.parametrize("kind", sorted(QUICK_CONFIGS))
def test_reference_flop_count_equals_torch_count_of_transformers(kind):
    import transformers
    config = QUICK_CONFIGS[kind]
    ours = flops.meta_model(config)
    theirs = getattr(transformers, config["architectures"][0])(transformers.PerceiverConfig(**config))
    theirs = theirs.eval().requires_grad_(False)
    if kind == "language":
        n = ours.spec.max_position_embeddings
        counted = _counted(lambda: theirs(input_ids=torch.zeros(1, n, dtype=torch.long),
                                          attention_mask=torch.ones(1, n)))
        stages = flops.language_stages(ours, [100], [8], n)
    elif kind.startswith("vision"):
        counted = _counted(lambda: theirs(pixel_values=torch.zeros(1, 3, 224, 224)))
        stages = flops.vision_stages(ours, 1)
    elif kind == "flow":
        h, w = ours.spec.train_size
        counted = _counted(lambda: theirs(inputs=torch.zeros(1, 2, 27, h, w)))
        stages = flops.flow_stages(ours)
    else:
        s = ours.spec
        t, h, w = s.output_shape[1:4]
        audio = torch.zeros(1, s.num_frames * s.audio_samples_per_frame, 1)
        inputs = dict(image=torch.zeros(1, t, 3, h, w), audio=audio, label=torch.zeros(1, s.num_labels))
        chunks = 4
        image_chunk, audio_chunk = t * h * w // chunks, audio.shape[1] // s.samples_per_patch // chunks

        def two_chunks():
            for k in range(2):
                theirs(inputs=inputs, subsampled_output_points={
                    "image": torch.arange(image_chunk * k, image_chunk * (k + 1)),
                    "audio": torch.arange(audio_chunk * k, audio_chunk * (k + 1)), "label": None})

        counted = _counted(two_chunks)
        stages = flops.multimodal_stages(ours, 2, chunks)
    assert flops.total(stages).reference == counted


@pytest.mark.parametrize("key", ["fill-mask", "fill-mask-batch"])
def test_our_fill_mask_flop_count_equals_torch_count_of_the_run_it_times(key, monkeypatch):
    # core batches texts by rows per latent-stack pass; 64 latent tokens a pass puts 4 tiny texts in a batch
    from perceiver_cli.core import layers

    monkeypatch.setattr(layers, "CPU_STACK_TOKENS", 64)
    monkeypatch.setattr(layers, "ONEDNN_LINEAR", False)  # oneDNN's op is invisible to torch's counter
    config, row = QUICK_CONFIGS["language"], row_named(key)
    model = build(config, "ours", "transformers", "cpu")
    counted = _counted(workload(row, model, "ours", config, QUICK, "cpu", []).run)
    assert compute_flops(row, config, QUICK, "transformers")["total"][0] == counted


def test_seconds_of_products_default_by_mode_and_can_be_set():
    assert parse_args(["--quick"]).seconds == peak_seconds(True) < parse_args([]).seconds == peak_seconds(False)
    assert parse_args(["--device", "cuda", "--seconds", "1"]).seconds == 1.0
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SystemExit) as stop:
            parse_args(["--seconds", bad])
        assert stop.value.code == 2
