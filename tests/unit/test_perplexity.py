"""Unit tests of evals.perplexity: exact values on hand-made models, then a real tiny Llama."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evals.perplexity import perplexity


class FixedDistribution(torch.nn.Module):
    """Predicts the same next-token distribution everywhere; records its mode."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.log_probs = torch.log(torch.tensor(probs))
        self.seen_training: list[bool] = []

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        self.seen_training.append(self.training)
        batch, seq = input_ids.shape
        return SimpleNamespace(logits=self.log_probs.expand(batch, seq, -1).clone())


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    model = FixedDistribution([1 / 7] * 7)
    blocks = torch.randint(0, 7, (5, 11), generator=torch.Generator().manual_seed(0))
    assert perplexity(model, blocks, "cpu", batch_size=2) == pytest.approx(7.0, rel=1e-6)


def test_perplexity_is_token_weighted_over_next_token_predictions():
    model = FixedDistribution([0.5, 0.25, 0.125, 0.125])
    # Targets are every token but the first of each block: 1 2 3 | 0 0 0 | 1 1 1.
    blocks = torch.tensor([[0, 1, 2, 3], [3, 0, 0, 0], [2, 1, 1, 1]])
    expected_nll = (math.log(4) + 2 * math.log(8) + 3 * math.log(2) + 3 * math.log(4)) / 9
    # batch_size 2 makes unequal batches (2 + 1 blocks): a mean of batch means would differ.
    for batch_size in (1, 2, 8):
        got = perplexity(model, blocks, "cpu", batch_size=batch_size)
        assert got == pytest.approx(math.exp(expected_nll), rel=1e-6)


def test_runs_in_eval_mode_and_restores_the_previous_mode():
    model = FixedDistribution([0.5, 0.5])
    model.train()
    perplexity(model, torch.tensor([[0, 1], [1, 0], [0, 0]]), "cpu", batch_size=2)
    assert model.seen_training == [False, False]
    assert model.training


def test_rejects_blocks_with_nothing_to_predict():
    model = FixedDistribution([0.5, 0.5])
    with pytest.raises(ValueError):
        perplexity(model, torch.empty((0, 8), dtype=torch.long), "cpu")
    with pytest.raises(ValueError):
        perplexity(model, torch.tensor([[0], [1]]), "cpu")
    with pytest.raises(ValueError):
        perplexity(model, torch.tensor([[0, 1]]), "cpu", batch_size=0)


def test_matches_the_models_own_loss_on_a_tiny_llama():
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attention_dropout=0.5,  # would make results random if eval mode were not set
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    blocks = torch.randint(0, 97, (5, 16), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        expected = math.exp(float(model(input_ids=blocks, labels=blocks).loss))
    model.train()
    first = perplexity(model, blocks, "cpu", batch_size=2)
    assert first == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, blocks, "cpu", batch_size=5) == pytest.approx(first, rel=1e-6)
    # A random-init model is close to uniform over its 97 tokens.
    assert 80 < first < 120
