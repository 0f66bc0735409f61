"""What the benchmarks measure: the rows of the results table, their units of work and their reported stages.

The targets each row is judged against are in benchmarks.targets; what each side runs is in
benchmarks.workloads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

TASKS = ("fill-mask", "classify", "flow", "autoencode-video")


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


def sizes_of(quick: bool) -> Sizes:
    """The units of work of a run: QUICK with --quick, else FULL."""
    return QUICK if quick else FULL


@dataclass(frozen=True)
class Stage:
    """A stage whose achieved GFLOP/s is reported."""

    name: str  # a timed stage of the child (see harness.StageTimer) or a derived one ("decode")
    label: str
    flops: tuple[str, ...]  # benchmarks.flops stage names summed for this stage


@dataclass(frozen=True)
class Row:
    """One line of the results table: a task, its model kind and the stages reported."""

    key: str
    task: str
    kind: str
    stages: tuple[Stage, ...]
    warmup: bool = False
    inner_repeats: int = 1  # timed runs per child: more samples where a run is short and noise is large
    # Our side's dtype. A bfloat16 row measures ours in bf16 against ours in fp32: its second side (the
    # "transformers" slot of the report) runs our own model in float32.
    dtype: str = "float32"

    @property
    def baseline(self) -> str:
        """What the row's second side runs, in words."""
        return "transformers" if self.dtype == "float32" else "ours in float32"

    def unit(self, sizes: Sizes, window: Optional[tuple[int, int]] = None) -> str:
        """The unit of work in words (a bf16 row says what it is compared with)."""
        if self.dtype != "float32":
            return f"{self.fp32_row().unit(sizes, window)}; {self.dtype} against our float32"
        if self.key == "fill-mask":
            return f"{sizes.text_bytes}-byte text, one {sizes.span}-byte span"
        if self.key == "fill-mask-batch":
            return f"{sizes.short_texts} short texts, one span each"
        if self.task == "classify":
            return f"{sizes.photos} photos, batch {sizes.batch}"
        if self.task == "flow":
            return f"one {window[0]}x{window[1]} window" if window else "one window"
        return "one clip, all outputs"


    def fp32_row(self) -> "Row":
        """This row at float32 (itself when it is one)."""
        return replace(self, key=self.key.removesuffix(BF16_SUFFIX), dtype="float32")


BF16_SUFFIX = "-bf16"
BF16_SELECTOR = "bf16"  # --tasks bf16: every bfloat16 row

ENCODER_CROSS = "encoder cross-attention"
LATENT_STACK = "latent self-attention"
MODEL_FORWARD = "model forward"
DECODE = "decode"

_ENC = (ENCODER_CROSS,)
_SELF = (LATENT_STACK,)
_ALL = (ENCODER_CROSS, LATENT_STACK, DECODE, "input adapter")
_LANGUAGE_STAGES = (Stage(LATENT_STACK, "latent self-attention (26 layers)", _SELF),
                    Stage(ENCODER_CROSS, "encoder cross-attention", _ENC),
                    Stage(DECODE, "decode + search (task time - encoder)", (DECODE,)))
_VISION_STAGES = (Stage(MODEL_FORWARD, "model forward", _ALL),
                  Stage(LATENT_STACK, "latent self-attention (48 layers)", _SELF),
                  Stage(ENCODER_CROSS, "encoder cross-attention", _ENC))

FP32_ROWS: tuple[Row, ...] = (
    Row("fill-mask", "fill-mask", "language", _LANGUAGE_STAGES, warmup=True, inner_repeats=5),
    Row("fill-mask-batch", "fill-mask", "language", _LANGUAGE_STAGES),
    Row("classify-conv", "classify", "vision-conv", _VISION_STAGES),
    Row("classify-fourier", "classify", "vision-fourier", _VISION_STAGES),
    Row("classify-learned", "classify", "vision-learned", _VISION_STAGES),
    Row("flow", "flow", "flow",
        (Stage(MODEL_FORWARD, "flow window (model forward)", _ALL),
         Stage(LATENT_STACK, "latent self-attention (24 layers)", _SELF),
         Stage(ENCODER_CROSS, "encoder cross-attention", _ENC),
         Stage(DECODE, "decode (forward - encoder)", (DECODE, "input adapter"))),
        inner_repeats=2),
    Row("autoencode-video", "autoencode-video", "multimodal",
        (Stage(DECODE, "multimodal decode (task time - encoder)", (DECODE,)),
         Stage(LATENT_STACK, "latent self-attention (8 layers)", _SELF),
         Stage(ENCODER_CROSS, "encoder cross-attention", _ENC))),
)


# bfloat16 rows beside the fp32 ones: the units of work a CPU with bf16 units speeds up most (the one-text
# fill-mask row is too short to time in a second dtype).
BF16_OF = ("fill-mask-batch", "classify-conv", "classify-fourier", "classify-learned", "flow", "autoencode-video")
ROWS: tuple[Row, ...] = tuple(
    r for fp32 in FP32_ROWS
    for r in (fp32, *([replace(fp32, key=fp32.key + BF16_SUFFIX, dtype="bfloat16")] if fp32.key in BF16_OF else [])))


def row_named(key: str) -> Row:
    """The row with this key."""
    return next(r for r in ROWS if r.key == key)


def select_rows(spec: Optional[str]) -> list[Row]:
    """Rows named by --tasks (task names or row keys, comma separated); all when None."""
    if not spec:
        return list(ROWS)
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    known = set(TASKS) | {r.key for r in ROWS} | {BF16_SELECTOR}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"benchmarks: unknown task(s) {', '.join(unknown)} (choose from {', '.join(sorted(known))})")
    bf16 = BF16_SELECTOR in wanted
    return [r for r in ROWS if r.task in wanted or r.key in wanted or (bf16 and r.dtype != "float32")]
