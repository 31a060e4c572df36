"""Serving figures: load time, time to first token, tokens/s, peak memory and cost.

Measured the way one user sees the model (one request at a time, greedy, on
the device the eval runs on) over a fixed prompt set, so reports of one
device compare across versions. They describe this process on this machine:
a served deployment (vLLM, batching, another GPU) has its own figures.

- load time (M7): from reading the checkpoint under the data root to the
  first generated token;
- time to first token (M2) and output tokens/s (M3) per prompt, p50 and p95
  (and tokens/s over all of them: output tokens over generation time);
- peak memory (M8): CUDA's peak allocated against the card's total, or the
  process's peak RSS against the machine's RAM on CPU;
- cost per 1k output tokens (M4): the configured price of a device hour over
  the measured tokens/s (one request at a time: an upper bound on cost).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

FIXED_PROMPTS = (
    "How do I install the package?",
    "What does the configuration file contain?",
    "Explain how the index is built.",
    "Which command runs the tests?",
    "How are errors reported to the user?",
    "What is the default port of the server?",
    "Describe the data format of a batch.",
    "How do I upgrade to a new version?",
)
DEFAULT_PRICE_PER_HOUR_USD = {"cpu": 0.10, "cuda": 2.50, "mps": 0.10}
"""A price per device hour when none is configured: about a 2-vCPU cloud VM, and
an on-demand H100 (2026 list prices, rounded); set ``price_per_device_hour``."""


class FirstTokenClock(BaseStreamer):
    """Records when generate hands over its first new token (the prompt comes first)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self._puts = 0

    def put(self, value: torch.Tensor) -> None:
        self._puts += 1
        if self._puts == 2 and self.first is None:
            self.first = time.perf_counter() - self.started

    def end(self) -> None:
        pass


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate_timed(
    model: Any, tokenizer: Any, prompt: str, new_tokens: int, device: torch.device
) -> dict:
    """One request: time to first token, total time and tokens, greedy."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([torch.tensor([[tokenizer.eos_token_id]]), ids], dim=1).to(device)
    _sync(device)
    clock = FirstTokenClock()
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        streamer=clock,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    _sync(device)
    seconds = time.perf_counter() - clock.started
    generated = int(out.shape[1] - ids.shape[1])
    return {
        "ttft_s": clock.first if clock.first is not None else seconds,
        "seconds": seconds,
        "tokens": generated,
        "text": tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True),
    }


def serving_figures(
    model: Any,
    tokenizer: Any,
    device: torch.device,
    price_per_hour_usd: float,
    prompts: Sequence[str] = FIXED_PROMPTS,
    new_tokens: int = 32,
    load_seconds: float | None = None,
) -> dict:
    model.eval()
    generate_timed(model, tokenizer, prompts[0], 2, device)  # warm-up (kernels, caches)
    runs = [generate_timed(model, tokenizer, p, new_tokens, device) for p in prompts]
    ttft = [r["ttft_s"] * 1000 for r in runs]
    latency = [r["seconds"] * 1000 for r in runs]
    rates = [r["tokens"] / r["seconds"] for r in runs if r["seconds"] > 0]
    tokens = sum(r["tokens"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    tokens_per_second = tokens / seconds if seconds else 0.0
    cost = price_per_hour_usd / 3600 / tokens_per_second * 1000 if tokens_per_second else 0.0
    return {
        "prompts": len(runs),
        "new_tokens": new_tokens,
        "load_to_first_token_s": load_seconds,
        "ttft_ms_p50": percentile(ttft, 50),
        "ttft_ms_p95": percentile(ttft, 95),
        "latency_ms_p50": percentile(latency, 50),
        "latency_ms_p95": percentile(latency, 95),
        "tokens_per_second": tokens_per_second,
        "tokens_per_second_p50": percentile(rates, 50),
        "tokens_per_second_p95": percentile(rates, 95),
        "price_per_device_hour_usd": price_per_hour_usd,
        "cost_per_1k_tokens_usd": cost,
        "ttft_ms": ttft,
        "outputs": [r["text"] for r in runs],
        **peak_memory(device),
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """Peak memory of this process on ``device`` against what the device has."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
        kind = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        kind = "process peak RSS"
    return {
        "peak_memory_bytes": int(peak),
        "device_memory_bytes": int(total),
        "peak_memory_share": peak / total if total else 0.0,
        "memory_measure": kind,
    }
