"""train_and_save / load_checkpoint: the path finetuned_checkpoint and eval_report take."""

from __future__ import annotations

import dataclasses
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.pipeline import checkpoint_version, load_checkpoint, train_and_save
from llama_assets.training.tokenizer import CHAT_TEMPLATE, train_bpe_tokenizer
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


def test_checkpoint_has_a_merged_model_plain_transformers_loads(tmp_path):
    texts = synthetic_corpus(60)
    trained = train_and_save(SMALL, SHORT, texts, "data-v1", tmp_path / "models", CPU)
    merged_dir = trained.path / "merged"
    assert (merged_dir / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    assert tokenizer.chat_template == CHAT_TEMPLATE  # the tokenizer travels with the weights
    _, finetuned, _ = load_checkpoint(SMALL, trained.path, CPU)
    assert torch.allclose(logits(merged), logits(finetuned), atol=1e-5)
    png = (trained.path / "loss_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "loss_curve.png" in trained.manifest["files"]


def test_a_rerun_resumes_from_the_run_directory_instead_of_retraining(tmp_path):
    texts = synthetic_corpus(60)
    cfg = dataclasses.replace(SHORT, checkpoint_every=4)
    version = checkpoint_version(SMALL, cfg, "data-v1")
    run_dir = tmp_path / "models" / "runs" / version
    first = train_and_save(SMALL, cfg, texts, "data-v1", tmp_path / "models", CPU, run_dir=run_dir)
    assert first.result.resumed_from_step == 0 and first.result.checkpoints_written == 2
    again = train_and_save(
        SMALL, cfg, texts, "data-v1", tmp_path / "models", CPU, run_dir=run_dir, merge=False
    )
    assert again.version == first.version
    assert again.result.resumed_from_step == 8 and again.result.checkpoints_written == 0
    assert again.result.losses == first.result.losses
    state = json.loads((again.path / "trainer_state.json").read_text())
    assert state["resumed_from_step"] == 8
    assert not (again.path / "merged").exists()
