"""Batched greedy generation: what the RAG, red-team and memorisation evals read.

Prompts are left-padded into batches of similar length (sorted, so padding is
small), start with eos (the separator the trainer packs documents with: a
prompt reads like the start of a document) and are cut from the left to fit
the model's window. Greedy, so the same model gives the same outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cpu_threads(device: torch.device | str, threads: int):
    """Run with ``threads`` intra-op threads on the CPU (0: leave torch's setting).

    The eval's CPU passes are small matrix products, where OpenMP's spinning
    threads cost more than they give on a busy machine: on two cores shared
    with other work, greedy generation of the tiny model ran 30-50x faster and
    its forward pass 5x faster on one thread than on two (measured here)."""
    if torch.device(device).type != "cpu" or threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_prompt(tokenizer: Any, prompt: str, max_tokens: int) -> list[int]:
    ids = [tokenizer.eos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    return ids[-max_tokens:]


@torch.no_grad()
def greedy_ids(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    device: torch.device | str,
    pad_token_id: int,
    batch_size: int = 8,
    eos_token_id: int | None = None,
) -> list[list[int]]:
    """Greedy continuations (new token ids only) of tokenised prompts, in order.

    With ``eos_token_id`` a continuation stops at eos (dropped); without, it
    runs ``max_new_tokens`` tokens (memorisation compares fixed lengths).
    """
    device = torch.device(device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(prompts[i]) :] = torch.tensor(list(prompts[i]))
                mask[r, width - len(prompts[i]) :] = 1
            kwargs: dict[str, Any] = {"eos_token_id": eos_token_id}
            if eos_token_id is None:
                kwargs = {"min_new_tokens": max_new_tokens, "eos_token_id": None}
            with _autocast(device):
                generated = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad_token_id,
                    **kwargs,
                )
            for r, i in enumerate(rows):
                new = generated[r, width:].tolist()
                if eos_token_id is not None and eos_token_id in new:
                    new = new[: new.index(eos_token_id)]
                out[i] = new
    finally:
        model.train(was_training)
    return out


def greedy_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    device: torch.device | str,
    window: int,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers to text prompts, stopping at eos, decoded without specials."""
    encoded = [encode_prompt(tokenizer, p, window - max_new_tokens) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    new = greedy_ids(
        model, encoded, max_new_tokens, device, pad, batch_size, tokenizer.eos_token_id
    )
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
