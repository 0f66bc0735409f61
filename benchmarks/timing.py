"""The timing loop of the matmul peak and the kernel bounds, and device synchronisation before reading the clock."""

from __future__ import annotations

import time
from typing import Callable


def synchronizer(device: str) -> Callable[[], None]:
    """What to call before reading the clock so that `device`'s queued work is done (nothing on the CPU)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def timed_call(run: Callable[[], object], sync: Callable[[], None],
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call of `run`, always > 0: a call shorter than the clock's resolution (an elapsed time of
    0) is timed again over 2, 4, 8, ... calls and their mean returned."""
    calls = 1
    while True:
        start = clock()
        for _ in range(calls):
            run()
        sync()
        elapsed = clock() - start
        if elapsed > 0:
            return elapsed / calls
        calls *= 2


def call_seconds(run: Callable[[], object], sync: Callable[[], None], min_seconds: float, tries: int = 3,
                 clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Wall times (each > 0) of `run` over at least `tries` calls (one at the least) and `min_seconds` of calls,
    after one untimed warm-up call. The count of calls, not the time budget, comes first: however slow the
    machine, at least `tries` calls are timed."""
    run()
    sync()
    times: list[float] = []
    while len(times) < max(1, tries) or sum(times) < min_seconds:
        times.append(timed_call(run, sync, clock))
    return times
