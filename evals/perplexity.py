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
from collections.abc import Sequence
from dataclasses import dataclass
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


# --- documents: perplexity and bits per byte ----------------------------------


def rolling_windows(
    token_ids: Sequence[int], window: int, prefix_token_id: int
) -> list[tuple[list[int], int]]:
    """Windows that predict every token of a document exactly once.

    lm-evaluation-harness's ``loglikelihood_rolling`` (``context_len=1``), so the
    figures agree with its ``bits_per_byte``: the first window is the prefix
    token and the first ``window`` tokens; each next one predicts the next
    ``window`` tokens from the token before them, and the last (shorter) one
    is filled up with as much earlier context as fits. Returns ``(ids, n)``:
    position ``t`` of ``ids`` predicts id ``t + 1``, and the last ``n`` ids are
    the targets.
    """
    windows = []
    for start in range(0, len(token_ids), window):
        end = min(start + window, len(token_ids))
        if start == 0:
            ids = [prefix_token_id, *token_ids[:end]]
        else:
            ids = list(token_ids[max(0, end - window - 1) : end])
        windows.append((ids, end - start))
    return windows


@dataclass(frozen=True)
class DocumentLoss:
    """Summed next-token NLL (nats) over documents, with what it was summed over."""

    nll: float
    tokens: int
    bytes: int
    documents: int

    @property
    def perplexity(self) -> float:
        """Per token: only comparable between models that share a tokenizer."""
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """Per UTF-8 byte of the text: comparable across tokenizers and variants."""
        return self.nll / (math.log(2) * self.bytes) if self.bytes else float("nan")

    def to_dict(self) -> dict:
        return {
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "nll": self.nll,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "documents": self.documents,
        }


def document_loss(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    texts: Sequence[str],
    device: torch.device | str,
    window: int,
    prefix_token_id: int,
    pad_token_id: int = 0,
    batch_size: int = 8,
) -> DocumentLoss:
    """NLL of every token of every document (``token_ids[i]`` encodes ``texts[i]``).

    Windows are sorted by length and right-padded into batches (padding is
    masked out of the loss), so batching changes no figure; bf16 autocast on
    CUDA, log-softmax in float32.
    """
    if len(token_ids) != len(texts):
        raise ValueError("token_ids and texts must have one entry per document")
    device = torch.device(device)
    kept = [(ids, text) for ids, text in zip(token_ids, texts, strict=True) if ids]
    windows = [w for ids, _ in kept for w in rolling_windows(ids, window, prefix_token_id)]
    windows.sort(key=lambda w: len(w[0]), reverse=True)
    was_training = model.training
    model.eval()
    total_nll = 0.0
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                targets = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (window_ids, n) in enumerate(batch):
                    ids[row, : len(window_ids)] = torch.tensor(window_ids)
                    mask[row, : len(window_ids)] = 1
                    targets[row, len(window_ids) - n : len(window_ids)] = 1
                ids, mask, targets = ids.to(device), mask.to(device), targets.to(device)
                with _autocast_for(device):
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                nll = F.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none"
                )
                total_nll += float((nll * targets[:, 1:]).sum())
    finally:
        model.train(was_training)
    return DocumentLoss(
        nll=total_nll,
        tokens=sum(len(ids) for ids, _ in kept),
        bytes=sum(len(text.encode("utf-8")) for _, text in kept),
        documents=len(kept),
    )
