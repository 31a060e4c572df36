"""The CPU backend's batching loop: continuous batching gives each request the tokens
it gets alone, and a request that arrives while a batch runs joins it."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llama_assets.serving.engine import FINISH_LENGTH, BatchingEngine, Sequence
from llama_assets.serving.sampling import SamplingParams


class DigitsTokenizer:
    """Token ids as text, so that any id decodes (a random model emits any)."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True) -> str:
        return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture
def engine(model):
    engine = BatchingEngine(model, DigitsTokenizer(), max_batch_size=8)
    engine.start()
    yield engine
    engine.stop()


def submit(engine: BatchingEngine, prompt: list[int], max_tokens: int):
    done = threading.Event()
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    seq = Sequence(prompt, params, lambda text, finish: done.set() if finish else None)
    engine.submit(seq)
    return seq, done


def alone(model, prompt: list[int], max_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
        pad_token_id=0,
    )  # fmt: skip
    return out[0, len(prompt) :].tolist()


def test_a_request_joins_the_running_batch_and_gets_the_tokens_it_gets_alone(model, engine):
    first, first_done = submit(engine, [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 200)
    while len(first.output_ids) < 3:  # the batch is decoding
        time.sleep(0.001)
    # Shorter and longer prompts than the running batch's cache: both sides get padded.
    late = [submit(engine, [20, 21, 22], 9), submit(engine, [40] * 30, 12)]
    for seq, done in late:
        assert done.wait(60)
        assert first.finished is None or seq.scheduled < first.finished  # joined, no wait
        assert seq.output_ids == alone(model, seq.prompt_ids, seq.params.max_tokens)
    assert first_done.wait(60)
    assert first.finish_reason == FINISH_LENGTH
    assert first.output_ids == alone(model, first.prompt_ids, 200)


def test_sequences_leave_the_batch_at_their_end_and_the_rest_go_on(model, engine):
    seqs = [submit(engine, [7 + i] * (3 + 2 * i), 4 + 6 * i) for i in range(5)]
    for seq, done in seqs:
        assert done.wait(60)
        assert len(seq.output_ids) == seq.params.max_tokens
        assert seq.output_ids == alone(model, seq.prompt_ids, seq.params.max_tokens)
