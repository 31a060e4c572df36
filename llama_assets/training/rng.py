"""Random number generators: seeding a run, saving and restoring every state, forking.

A run seeds Python, NumPy and torch from its config and hands the caller's
states back afterwards. A training checkpoint holds every state the loop may
draw from (Python, NumPy, torch CPU and CUDA), so a resumed run draws the same
dropout masks as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from llama_assets.training.device import cuda_index


def seed_all(seed: int) -> None:
    """Seed torch, Python and NumPy from one number."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """Restore the caller's torch (CPU and `device`), Python and NumPy RNG states on exit."""
    devices = [cuda_index(device)] if device.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def torch_rng_state(device: torch.device) -> dict[str, Any]:
    """The torch CPU RNG state, and the CUDA one when training on CUDA."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_torch_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of `torch_rng_state`."""
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every RNG the loop may draw from: Python, NumPy, torch CPU and CUDA.

    Only tensors and plain values, so `torch.load(..., weights_only=True)` reads it back.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        **torch_rng_state(device),
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Inverse of `rng_states`."""
    random.setstate(_as_tuple(states["python"]))
    n = states["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    set_torch_rng_state(states, device)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
