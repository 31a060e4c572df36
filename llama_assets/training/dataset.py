"""Turning clean documents into training blocks: split, tokenize, pack.

The split is decided per document by a hash of its id, not by position or a
random draw, so a document's side never changes as new batches arrive and
validation never leaks into training across re-materialisations. Packing is
the standard causal-LM recipe: documents joined by eos and cut into full
blocks, so every token in a block is a real training target and no compute is
spent on padding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

Split = Literal["train", "validation"]


def split_of(doc_id: str, validation_fraction: float = 0.1) -> Split:
    """Which side of the split `doc_id` falls on; a pure function of the id.

    The first 8 bytes of sha256(doc_id) read as a number in [0, 1) are compared
    with the fraction, so raising the fraction only moves documents from train
    to validation, never the other way.
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if position < validation_fraction else "train"


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (packing adds eos itself)."""
    batch = list(texts)
    if not batch:
        return []
    # verbose=False: long documents are expected here; packing cuts them into blocks.
    encoded = tokenizer(batch, add_special_tokens=False, verbose=False)
    return [list(ids) for ids in encoded["input_ids"]]


def pack_token_ids(
    token_id_lists: Iterable[Sequence[int]], seq_len: int, eos_id: int
) -> torch.Tensor:
    """Pack documents into a (n_blocks, seq_len) int64 tensor for causal-LM training.

    Each document is followed by `eos_id`, the stream is cut into consecutive
    blocks of exactly `seq_len` tokens, and the incomplete tail is dropped.
    Documents may span block boundaries (as in GPT/Llama pretraining). Streams
    the input, holding at most one partial block besides the output.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (one input, one target), got {seq_len}")
    blocks: list[torch.Tensor] = []
    buffer: list[int] = []
    for ids in token_id_lists:
        buffer.extend(ids)
        buffer.append(eos_id)
        n_full = len(buffer) // seq_len
        if n_full:
            cut = n_full * seq_len
            blocks.append(torch.tensor(buffer[:cut], dtype=torch.long).view(n_full, seq_len))
            del buffer[:cut]
    if not blocks:
        return torch.empty((0, seq_len), dtype=torch.long)
    return torch.cat(blocks)
