"""Instruction (SFT) records: chat-template rendering, loss masked on prompts, packing."""

from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest
import torch

from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.dataset import (
    IGNORE_INDEX,
    pack_examples,
    sft_example,
    training_examples,
    with_messages,
)
from llama_assets.training.recipe import finetune_lora
from llama_assets.training.tokenizer import train_bpe_tokenizer
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "the model"},
    {"role": "assistant", "content": "reads tokens"},
    {"role": "user", "content": "and"},
    {"role": "assistant", "content": "learns"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(synthetic_corpus(), vocab_size=SMALL.vocab_size)


def learned_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])


def test_only_assistant_turns_carry_loss(tokenizer):
    ids, labels = sft_example(tokenizer, CHAT)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert (
        learned_text(tokenizer, ids, labels)
        == " reads tokens<|end_of_text|>\n learns<|end_of_text|>\n"
    )
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(ids, labels, strict=True))
    assert labels[:5] == [IGNORE_INDEX] * 5  # bos, system turn...
    assert sft_example(tokenizer, []) == ([], [])


def test_training_examples_mix_chat_and_plain_documents(tokenizer):
    texts = ["the model reads", "be brief the model reads tokens and learns"]
    examples = list(training_examples(tokenizer, texts, [None, json.dumps(CHAT)]))
    plain_ids, plain_labels = examples[0]
    assert plain_ids == plain_labels and plain_ids[-1] == tokenizer.eos_token_id
    assert examples[1] == sft_example(tokenizer, CHAT)


def test_pack_examples_cuts_labels_alongside_and_drops_fully_masked_blocks():
    examples = [([1, 2, 3], [-100, -100, 3]), ([4, 5, 6, 7, 8], [-100] * 5), ([9, 10], [9, 10])]
    packed = pack_examples(examples, seq_len=3)
    # Blocks: [1 2 3 | -100 -100 3], [4 5 6 | masked] dropped, [7 8 9 | -100 -100 9]; tail dropped.
    assert packed.shape == (2, 2, 3)
    assert packed[:, 0].tolist() == [[1, 2, 3], [7, 8, 9]]
    assert packed[:, 1].tolist() == [[-100, -100, 3], [-100, -100, 9]]
    assert pack_examples([], seq_len=4).shape == (0, 2, 4)


def test_finetune_on_instruction_blocks_learns_the_replies_only(tokenizer):
    examples = [sft_example(tokenizer, CHAT)] * 40
    blocks = pack_examples(examples, SHORT.seq_len)
    result = finetune_lora(
        build_tiny_llama(SMALL, tokenizer, seed=0),
        blocks,
        dataclasses.replace(SHORT, max_steps=6),
        "cpu",
    )
    assert result.losses[-1] < result.losses[0] - 1.0
    # The loss is measured on assistant tokens only: masking the prompt changes it.
    unmasked = blocks.clone()
    unmasked[:, 1] = unmasked[:, 0]
    model = result.model.eval()
    with torch.no_grad():
        ids = blocks[:4, 0]
        masked_loss = model(input_ids=ids, labels=blocks[:4, 1]).loss
        full_loss = model(input_ids=ids, labels=unmasked[:4, 1]).loss
    assert not torch.isclose(masked_loss, full_loss)


def test_dataset_columns_treat_a_missing_messages_column_as_null():
    old_shards = pl.DataFrame({"doc_id": ["a"], "source": ["s"], "batch": ["b"], "text": ["t"]})
    out = with_messages(old_shards)
    assert out.columns == ["doc_id", "source", "batch", "text", "messages"]
    assert out["messages"].to_list() == [None]
    assert out.schema["messages"] == pl.String
