"""A request's sampling settings, shared by the API layer and the engine (no torch here,
so the gateway process never imports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI's sampling fields (vLLM's defaults: temperature 1, top_p 1)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
