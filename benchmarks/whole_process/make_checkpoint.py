"""Write a full-size checkpoint with random weights (the benchmarks' seeded weights) in the hub layout.

Usage: python -m benchmarks.whole_process.make_checkpoint KIND OUT_DIR   (KIND: language, vision-conv, ...)
The real checkpoints cannot be downloaded on machines without network; the timings do not depend on the
values of the weights."""

import sys

import transformers

from benchmarks.configs import FULL_CONFIGS
from benchmarks.workloads import randomise


def main() -> None:
    kind, out = sys.argv[1], sys.argv[2]
    config = FULL_CONFIGS[kind]
    model = getattr(transformers, config["architectures"][0])(transformers.PerceiverConfig(**config))
    randomise(model)
    model.eval().save_pretrained(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
