"""train_and_save / load_checkpoint: the path finetuned_checkpoint and eval_report take."""

from __future__ import annotations

import dataclasses
import json

import torch

from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.pipeline import checkpoint_version, load_checkpoint, train_and_save
from llama_assets.training.tokenizer import train_bpe_tokenizer
from llama_assets.training.variants import VARIANTS
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

CPU = torch.device("cpu")
PROBE = torch.tensor([[5, 6, 7, 8, 9, 10]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE).logits


def test_local_variant_checkpoint_carries_its_base_and_reloads_exactly(tmp_path):
    texts = synthetic_corpus(60)
    trained = train_and_save(SMALL, SHORT, texts, "data-v1", tmp_path / "models", CPU)
    assert trained.version == checkpoint_version(SMALL, SHORT, "data-v1")
    assert trained.version != checkpoint_version(SMALL, SHORT, "data-v2")
    for name in ("base/model.safetensors", "adapter/adapter_model.safetensors", "tokenizer"):
        assert (trained.path / name).exists(), name
    state = json.loads((trained.path / "trainer_state.json").read_text())
    assert (state["data_version"], state["base_model"], state["steps"]) == ("data-v1", "base", 8)

    base, finetuned, tokenizer = load_checkpoint(SMALL, trained.path, CPU)
    assert len(tokenizer) == SMALL.vocab_size
    assert torch.allclose(logits(finetuned), logits(trained.result.model.eval()), atol=1e-5)
    rebuilt = build_tiny_llama(SMALL, train_bpe_tokenizer(texts, SMALL.vocab_size), SHORT.seed)
    assert torch.equal(logits(base), logits(rebuilt))
    assert not torch.allclose(logits(base), logits(finetuned))


def test_real_variant_needs_only_a_weights_path(tmp_path, monkeypatch):
    """A Hugging Face-format directory named by the variant's variable is all it takes."""
    texts = synthetic_corpus(60)
    tokenizer = train_bpe_tokenizer(texts, SMALL.vocab_size)
    weights = tmp_path / "weights"
    build_tiny_llama(SMALL, tokenizer, seed=3).save_pretrained(weights)
    tokenizer.save_pretrained(weights)
    monkeypatch.setenv("LLAMA_WEIGHTS_LLAMA_3_2_1B", str(weights))
    variant = dataclasses.replace(VARIANTS["llama-3.2-1b"], dtype="float32")
    cfg = dataclasses.replace(SHORT, modules_to_save=())  # LoRA only, as for real weights

    trained = train_and_save(variant, cfg, texts, "data-v1", tmp_path / "models", CPU)
    assert not (trained.path / "base").exists()
    state = json.loads((trained.path / "trainer_state.json").read_text())
    assert state["base_model"] == str(weights)
    base, finetuned, _ = load_checkpoint(variant, trained.path, CPU)
    assert not torch.allclose(logits(base), logits(finetuned))
