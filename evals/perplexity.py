"""Perplexity of a causal LM on packed token blocks.

The quality figure that compares a fine-tune with its base on held-out text.
It is token-weighted (total NLL over all predicted tokens, divided by their
count), so it does not depend on how the blocks are batched. Blocks are the
same unpadded, eos-joined blocks the trainer packs, so every position but the
first of each block is a prediction.

This module deliberately does not import the training package: evals is a
library the platform uses, not the other way round.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F


def _autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # Same rule as training: bf16 autocast on CUDA only.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def perplexity(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    device: torch.device | str,
    batch_size: int = 8,
) -> float:
    """exp(mean next-token NLL) of `model` over `blocks` of shape (n_blocks, seq_len).

    Runs in eval mode (no dropout) without gradients; the model's previous
    train/eval mode is restored afterwards. The model must already be on `device`.
    """
    if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"blocks must be (n >= 1, seq_len >= 2), got {tuple(blocks.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_nll = 0.0
    total_tokens = 0
    try:
        with torch.no_grad():
            for start in range(0, blocks.shape[0], batch_size):
                input_ids = blocks[start : start + batch_size].to(device)
                with _autocast_for(device):
                    logits = model(input_ids=input_ids, use_cache=False).logits
                # Position t predicts token t+1; NLL summed in float32.
                nll = F.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                    input_ids[:, 1:].reshape(-1),
                    reduction="sum",
                )
                total_nll += float(nll)
                total_tokens += input_ids[:, 1:].numel()
    finally:
        model.train(was_training)
    return math.exp(total_nll / total_tokens)
