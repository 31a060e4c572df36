"""The device a run trains on: autocast, CUDA index, timing and memory figures.

Which device to use is chosen by `resources.device.DeviceResource`; this module
only adapts the loop to it, so the same code runs on CPU, CUDA and MPS.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from typing import Any

import torch


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; full precision elsewhere (CPU/MPS bf16 is slow or lossy)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cuda_index(device: torch.device) -> int:
    """The CUDA device ordinal of `device` (the current one when it names none)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def reset_peak_memory(device: torch.device) -> None:
    """Start counting peak GPU memory from here (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are true (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by torch on CUDA; otherwise the process's peak RSS so far
    (which includes everything loaded before training)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB
