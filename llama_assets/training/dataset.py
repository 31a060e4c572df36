"""Turning clean documents into training blocks: split, tokenize, pack.

The split is decided per document by a hash of its id, not by position or a
random draw, so a document's side never changes as new batches arrive and
validation never leaks into training across re-materialisations. Packing is
the standard causal-LM recipe: documents joined by eos and cut into full
blocks, so every token in a block is a real training target and no compute is
spent on padding. Instruction records (a `messages` list of chat turns) are
rendered with the tokenizer's chat template and packed the same way, with the
loss masked (label -100) on everything but the assistant's turns.

Reading a split needs no Dagster (the torchrun workers read it too): the
snapshot is a checksummed shard set, verified part by part before it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import polars as pl
import torch
from transformers import PreTrainedTokenizerBase

from llama_assets.base.shards import scan_shards
from llama_assets.base.store import Location, as_location

Split = Literal["train", "validation"]

# The columns of the training dataset snapshot (`datasets/training/<split>/`).
DATASET_COLUMNS = ["doc_id", "source", "batch", "text", "messages"]


def with_messages(shards: pl.DataFrame) -> pl.DataFrame:
    """The dataset's columns; shards written before the `messages` column have none (null)."""
    if "messages" not in shards.columns:
        shards = shards.with_columns(pl.lit(None, dtype=pl.String).alias("messages"))
    return shards.select(DATASET_COLUMNS)


def trainable(shards: pl.DataFrame) -> pl.DataFrame:
    """The clean documents fit to train on (`for_training`: they pass the quality
    rules, curate/validate.py); shards written before the column hold only such."""
    return shards.filter(pl.col("for_training")) if "for_training" in shards.columns else shards


def read_split(dataset_dir: Location | Path, split: Split) -> pl.DataFrame:
    """One side of the training dataset snapshot, every part checksummed first.

    Raises CorruptShardError (llama_assets/base/shards.py) on a damaged part.
    """
    return with_messages(scan_shards(as_location(dataset_dir) / split, verify=True).collect())


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


# --- instruction (SFT) records -----------------------------------------------------------------

IGNORE_INDEX = -100  # label of a token that carries no loss (transformers' convention)


def sft_example(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation, rendered by the tokenizer's chat template.

    Only assistant turns are learned: every other token (system and user turns,
    the role headers the template adds) is labelled IGNORE_INDEX. Spans are
    found in characters, by rendering each prefix of the conversation (with
    the generation prompt, so the assistant header stays masked), then mapped
    to tokens through the fast tokenizer's offsets, so no BPE merge across a
    span boundary can shift them.
    """
    if not messages:
        return [], []

    def render(upto: int, prompt: bool = False) -> str:
        if upto == 0:
            return ""
        return tokenizer.apply_chat_template(
            list(messages[:upto]), tokenize=False, add_generation_prompt=prompt
        )

    text = render(len(messages))
    learned: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            learned.append((len(render(i, prompt=True)), len(render(i + 1))))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    # A token is learned when any of its characters is (" reads" starts with the
    # header's space but is the reply's first word).
    labels = [
        token if any(begin < stop and finish > start for start, stop in learned) else IGNORE_INDEX
        for token, (begin, finish) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return ids, labels


def pack_examples(
    examples: Iterable[tuple[Sequence[int], Sequence[int]]], seq_len: int
) -> torch.Tensor:
    """Pack (ids, labels) examples into a (n_blocks, 2, seq_len) tensor: ids, then labels.

    Same recipe as `pack_token_ids` (concatenate, cut into full blocks, drop the
    tail), with the labels cut alongside; blocks whose labels are all masked are
    dropped, as they would only cost compute.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (one input, one target), got {seq_len}")
    ids_buf: list[int] = []
    labels_buf: list[int] = []
    blocks: list[torch.Tensor] = []
    for ids, labels in examples:
        ids_buf.extend(ids)
        labels_buf.extend(labels)
        n_full = len(ids_buf) // seq_len
        if n_full:
            cut = n_full * seq_len
            pair = torch.tensor([ids_buf[:cut], labels_buf[:cut]], dtype=torch.long)
            blocks.append(pair.view(2, n_full, seq_len).transpose(0, 1))
            del ids_buf[:cut], labels_buf[:cut]
    if not blocks:
        return torch.empty((0, 2, seq_len), dtype=torch.long)
    packed = torch.cat(blocks)
    return packed[(packed[:, 1] != IGNORE_INDEX).any(dim=1)].contiguous()


def training_examples(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    messages: Sequence[str | None],
) -> Iterator[tuple[list[int], list[int]]]:
    """(ids, labels) per document: chat records masked to their assistant turns,
    plain documents learned in full and closed by eos (as `pack_token_ids` does).

    `messages` is the shards' `messages` column: JSON of a message list, or None.
    """
    eos = tokenizer.eos_token_id
    for text, raw in zip(texts, messages, strict=True):
        if raw:
            yield sft_example(tokenizer, json.loads(raw))
        else:
            ids = tokenize_texts(tokenizer, [text])[0] + [eos]
            yield ids, list(ids)
