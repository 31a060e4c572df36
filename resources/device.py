"""Which accelerator a run uses, chosen at run time, never at import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from llama_assets.base.parallel import torch_threads

if TYPE_CHECKING:
    import torch

# torch is imported where a device is chosen, not with the code location: the CLI's
# light commands (ingest, status) and the UI's code server load without it.


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple MPS, then the CPU."""
    import torch

    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def size_cpu_threads() -> int:
    """Set torch's intra-op threads to the CPUs actually free (see `torch_threads`)."""
    import torch

    threads = torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


class DeviceResource(dg.ConfigurableResource):
    preference: str = "auto"

    def device(self) -> torch.device:
        device = pick_device(self.preference)
        if device.type == "cpu":
            size_cpu_threads()
        return device

    def describe(self) -> str:
        import torch

        device = self.device()
        if device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(device)})"
        return device.type
