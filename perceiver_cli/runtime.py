"""Where and how a run computes: device, dtype, threads, batch size and the decoding pool, decided once.

A command (or the Python API) resolves a `Runtime` when it starts and passes it down; nothing below asks the
model where its parameters live. On the CPU, core runs the latent stack a few rows at a time whatever the
batch size (see core.layers.in_passes): that is a property of the CPU path, documented in the README.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from perceiver_cli import interrupts

with interrupts.deferred():  # a signal inside torch's C++ start-up would abort the process: take it after
    import torch

from perceiver_cli.choices import AUTO_DTYPE, DTYPE_NAMES, DTYPES as DTYPE_CHOICES
from perceiver_cli.errors import UsageError
from concurrent.futures import ThreadPoolExecutor

DTYPES = {name: getattr(torch, name) for name in DTYPE_CHOICES}
CPUINFO = "/proc/cpuinfo"  # Linux; elsewhere it is absent and auto stays float32 on the CPU
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
# How much nicer than the process the decoding threads beside a CPU model run. 0: beside two busy loops,
# decoding 10 nicer starved the model of images (classify photos/s fell; docs/performance.md).
DECODE_NICENESS = 0


def pick_device(device: str | torch.device) -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is absent is a usage error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise UsageError(f"unknown device '{device}' (use {DEVICE_NAMES})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} was asked for, but no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps was asked for, but MPS is not available")
    return torch.device(device)


def cpu_bf16_units() -> Optional[str]:
    """The CPU feature that multiplies bf16 matrices natively (amx_bf16 or avx512_bf16), or None: Linux's
    /proc/cpuinfo flags, confirmed by oneDNN's own check that it has bf16 kernels for this CPU."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path(CPUINFO).read_text().splitlines()
                      if line.startswith("flags")), [])
    except (OSError, IndexError):
        return None
    feature = next((name for name in ("amx_bf16", "avx512_bf16") if name in flags), None)
    try:
        native = feature is not None and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return feature if native else None


def pick_dtype(dtype: Optional[str | torch.dtype], device: torch.device) -> torch.dtype:
    """None -> float32; auto -> bfloat16 on accelerators that have it and on CPUs with native bf16 matrix
    units (cpu_bf16_units), else float32; float16 only on accelerators."""
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        if dtype is None:
            dtype = "float32"
        if dtype == AUTO_DTYPE:
            return auto_dtype(device)
        if dtype not in DTYPES:
            raise UsageError(f"unknown --dtype '{dtype}' (use {', '.join(DTYPE_NAMES)})")
        chosen = DTYPES[dtype]
    if chosen == torch.float16 and device.type == "cpu":
        raise UsageError("--dtype float16 is for accelerators; on the CPU use float32 or bfloat16")
    return chosen


def auto_dtype(device: torch.device) -> torch.dtype:
    """What --dtype auto computes in on `device` (see pick_dtype)."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_units() else torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """The --dtype name of a torch dtype."""
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype))


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            usable = min(usable, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, usable)


def configure_threads() -> int:
    """One matmul thread per usable CPU at most (torch counts the host's cores, not a container's share);
    torch's own default is kept when lower, and OMP_NUM_THREADS or MKL_NUM_THREADS, when set, win.
    Returns the thread count in force."""
    if not any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        torch.set_num_threads(max(1, min(torch.get_num_threads(), usable_cpus())))
    return torch.get_num_threads()


def _yield_to_the_model() -> None:
    """Lower this decoding thread's priority, so it runs on CPU time the model's threads leave idle."""
    # Linux only: there a thread id is a valid `who` for setpriority; elsewhere it could name another process.
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + DECODE_NICENESS))
        except OSError:
            pass


@dataclass(frozen=True)
class Runtime:
    """One run's execution decisions. `batch_size` is the task's items (or windows) per model step."""

    device: torch.device
    dtype: torch.dtype
    batch_size: int
    threads: int

    @property
    def on_cpu(self) -> bool:
        return self.device.type == "cpu"

    @property
    def note(self) -> Optional[str]:
        """A one-time note when the CPU computes in bfloat16 (how, and how to get float32), else None."""
        if not (self.on_cpu and self.dtype == torch.bfloat16):
            return None
        units = cpu_bf16_units()
        how = f"native on this CPU ({units})" if units else "emulated: this CPU has no bf16 matrix units, so slower"
        return (f"computing in bfloat16 ({how}): matrix products in bf16 with fp32 accumulation, outputs in fp32; "
                "--dtype float32 for full precision")

    @property
    def decode_workers(self) -> int:
        """Decoding threads: one beside a CPU model (the model wants the cores), more to feed an accelerator."""
        if self.on_cpu:
            return 1 if usable_cpus() <= 4 else 2
        return max(1, min(8, usable_cpus() - 1))

    def decode_pool(self):
        """A thread pool for decoding inputs beside the model (DECODE_NICENESS nicer on the CPU)."""
        return ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="perceiver-decode",
                                  initializer=_yield_to_the_model if self.on_cpu else None)


def resolve_runtime(device: str | torch.device = "auto", dtype: Optional[str | torch.dtype] = None,
                    batch_size: Optional[int] = None, cpu_batch_size: int = 1, accelerator_batch_size: int = 8,
                    configure: bool = True) -> Runtime:
    """The Runtime for a run: the device and dtype checked, threads set (unless configure=False), and the
    batch size given or the task's default for the device."""
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    chosen = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen)
    threads = configure_threads() if configure else torch.get_num_threads()
    default = cpu_batch_size if chosen.type == "cpu" else accelerator_batch_size
    return Runtime(chosen, chosen_dtype, batch_size or default, threads)
