"""Fixtures shared by the training tests: a small tokenizer and packed blocks."""

from __future__ import annotations

import pytest
import torch

from llama_assets.training.dataset import pack_token_ids, tokenize_texts
from llama_assets.training.tokenizer import train_bpe_tokenizer
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(synthetic_corpus(), vocab_size=SMALL.vocab_size)


@pytest.fixture(scope="module")
def blocks(tokenizer) -> torch.Tensor:
    return pack_token_ids(
        tokenize_texts(tokenizer, synthetic_corpus()), SHORT.seq_len, tokenizer.eos_token_id
    )
