"""What `flow --downscale F` costs and saves on the Sintel sample (alley_1, frames 2-3, clean pass).

Usage: python -m benchmarks.flow_downscale [--data DIR] [--factors 1.5,2,3,4]

For each factor: the windows the model runs (the time scales with them) and the resolution floor of the
accuracy cost: the end-point error of the ground truth itself taken down to the model's resolution and
brought back as `--downscale` brings the model's flow back (core.flow.upscale_flow). A trained model's
error at that resolution adds to this floor; these machines have no trained weights to measure it with.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

SINTEL_TRUTH = "flow/sintel_alley_1/frame_0002_gt.flo"
WINDOW = (368, 496)  # the flow checkpoint's train_size


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flow_downscale", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("PERCEIVER_BENCHMARK_DATA") or None)
    p.add_argument("--factors", default="1.5,2,3,4")
    args = p.parse_args(argv)
    if not args.data or not (Path(args.data) / SINTEL_TRUTH).is_file():
        p.error(f"--data must name a folder with {SINTEL_TRUTH}")
    import torch
    import torch.nn.functional as F

    from perceiver_cli.core.flow import downscaled_size, frame_windows, upscale_flow
    from perceiver_cli.io.flo import read_flo

    truth = torch.from_numpy(read_flo(Path(args.data) / SINTEL_TRUTH).copy())
    h, w = truth.shape[:2]
    magnitude = truth.norm(dim=-1).mean().item()
    print(f"| --downscale | model's frame | windows | ground truth's end-point error after the round trip, px "
          f"(mean flow {magnitude:.2f} px) |\n|---|---|---|---|")
    print(f"| 1 | {w}x{h} | {len(frame_windows(h, w, WINDOW))} | 0 |")
    for factor in (float(f) for f in args.factors.split(",")):
        small = downscaled_size(h, w, factor)
        # the flow of the resized frames is the true flow resized, its vectors divided by the factor
        down = F.interpolate(truth.permute(2, 0, 1)[None], size=small, mode="bilinear", antialias=True,
                             align_corners=False)[0].permute(1, 2, 0)
        down = down * torch.tensor([small[1] / w, small[0] / h])
        back = upscale_flow(down, (h, w))
        error = (back - truth).norm(dim=-1)
        print(f"| {factor:g} | {small[1]}x{small[0]} | {len(frame_windows(*small, WINDOW))} | mean "
              f"{error.mean().item():.3f}, 99th percentile {torch.quantile(error.flatten(), 0.99).item():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
