"""Unit tests of the pure training logic: split, packing, tokenizer, LoRA loop, checkpoints.

Everything runs on CPU on a Llama of hidden size 64 and a 320-token BPE trained
on a synthetic corpus, so the file runs in seconds and needs no download.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_assets.training.base_model import build_tiny_llama, load_base_model
from llama_assets.training.batches import epoch_order, micro_batches
from llama_assets.training.checkpointer import (
    CorruptCheckpointError,
    load_finetuned,
    load_finetuned_tokenizer,
    read_trainer_state,
    save_finetuned,
)
from llama_assets.training.config import TrainConfig
from llama_assets.training.dataset import pack_token_ids, split_of, tokenize_texts
from llama_assets.training.recipe import finetune_lora
from llama_assets.training.state import LoopState
from llama_assets.training.tokenizer import CHAT_TEMPLATE, train_bpe_tokenizer
from llama_assets.training.variants import (
    VARIANTS,
    MissingWeightsError,
    weights_path,
)

WORDS = "the a model reads tokens and learns which word follows each other in small corpus of text"


def synthetic_corpus(n_docs: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = WORDS.split()
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "." for _ in range(n_docs)
    ]


SMALL = dataclasses.replace(
    VARIANTS["tiny"],
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    vocab_size=320,
)
SHORT = TrainConfig(
    seq_len=32,
    micro_batch_size=4,
    max_steps=8,
    warmup_steps=2,
    learning_rate=1e-2,
    modules_to_save=("embed_tokens", "lm_head"),
    log_every=3,
)


@pytest.fixture(scope="module")
def trained(tokenizer, blocks):
    return finetune_lora(build_tiny_llama(SMALL, tokenizer, seed=0), blocks, SHORT, "cpu")


# --- split -------------------------------------------------------------------------------------


def test_split_of_is_fixed_per_doc_id():
    # Golden values: a change of hashing scheme would move documents across the split.
    assert [split_of(f"doc-{i}") for i in range(10)] == ["train"] * 7 + ["validation"] + [
        "train"
    ] * 2
    # Order and company of other ids play no part.
    assert [split_of(f"doc-{i}") for i in reversed(range(10))][2] == "validation"


def test_split_fraction_is_roughly_right_and_monotone():
    ids = [f"doc-{i}" for i in range(10_000)]
    at_10 = {i for i in ids if split_of(i, 0.1) == "validation"}
    at_30 = {i for i in ids if split_of(i, 0.3) == "validation"}
    assert len(at_10) == 1014  # expected 1000 +- 30 (one sigma)
    assert len(at_30) == 2920  # expected 3000 +- 46
    assert at_10 <= at_30  # a larger fraction only moves documents train -> validation
    assert {split_of(i, 0.0) for i in ids[:100]} == {"train"}
    assert {split_of(i, 1.0) for i in ids[:100]} == {"validation"}
    with pytest.raises(ValueError):
        split_of("doc-0", 1.5)


# --- packing -----------------------------------------------------------------------------------


def test_pack_token_ids_exact_blocks():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]  # stream: 1 2 3 0 4 5 0 6 7 8 9 0
    packed = pack_token_ids(iter(docs), seq_len=5, eos_id=0)
    assert packed.dtype == torch.long
    assert packed.tolist() == [[1, 2, 3, 0, 4], [5, 0, 6, 7, 8]]  # tail [9, 0] dropped
    assert pack_token_ids(docs, seq_len=4, eos_id=0).tolist() == [
        [1, 2, 3, 0],
        [4, 5, 0, 6],
        [7, 8, 9, 0],
    ]


def test_pack_token_ids_short_input_gives_no_blocks():
    packed = pack_token_ids([[1, 2]], seq_len=8, eos_id=0)
    assert packed.shape == (0, 8)
    with pytest.raises(ValueError):
        pack_token_ids([[1, 2]], seq_len=1, eos_id=0)


def test_tokenize_texts_adds_no_special_tokens_and_round_trips(tokenizer):
    texts = ["the model reads", "tokens ünïcode 🙂 never seen"]
    ids = tokenize_texts(tokenizer, texts)
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert not specials & {t for row in ids for t in row}
    assert [tokenizer.decode(row) for row in ids] == texts
    assert tokenize_texts(tokenizer, []) == []


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_specials_size_and_chat_template(tokenizer, tmp_path):
    assert len(tokenizer) == 320
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|pad|>",
    ]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded.chat_template == CHAT_TEMPLATE
    rendered = reloaded.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|begin_of_text|>user: hi<|end_of_text|>\nassistant: "


def test_tokenizer_is_deterministic_within_and_across_processes(tokenizer):
    again = train_bpe_tokenizer(synthetic_corpus(), vocab_size=320)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    # A fresh process has fresh hash-map seeds (Rust and Python): merges must not depend on them.
    code = (
        "import json, sys; sys.path.insert(0, '.');"
        "from llama_assets.training.tokenizer import train_bpe_tokenizer;"
        "print(train_bpe_tokenizer(json.load(sys.stdin), 320).backend_tokenizer.to_str())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(synthetic_corpus()),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == tokenizer.backend_tokenizer.to_str()


# --- base model --------------------------------------------------------------------------------


def test_build_tiny_llama_is_seeded_and_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_llama(SMALL, tokenizer, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = build_tiny_llama(SMALL, tokenizer, seed=7)
    c = build_tiny_llama(SMALL, tokenizer, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert a.config.vocab_size == len(tokenizer) == 320
    assert (a.config.bos_token_id, a.config.eos_token_id, a.config.pad_token_id) == (0, 1, 2)


def test_load_base_model_reads_local_hf_dir(tokenizer, tmp_path):
    model = build_tiny_llama(SMALL, tokenizer, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_base_model(VARIANTS["llama-3.2-1b"], str(tmp_path), dtype="float32")
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert loaded_tok.pad_token_id == 2
    as_bf16, _ = load_base_model(VARIANTS["llama-3.2-1b"], str(tmp_path))  # variant's dtype
    assert as_bf16.dtype == torch.bfloat16


# --- variants ----------------------------------------------------------------------------------


def test_missing_weights_error_names_the_env_var(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAMA_WEIGHTS_LLAMA_3_2_1B", raising=False)
    with pytest.raises(MissingWeightsError) as excinfo:
        weights_path(VARIANTS["llama-3.2-1b"])
    message = str(excinfo.value)
    assert "'llama-3.2-1b'" in message
    assert "LLAMA_WEIGHTS_LLAMA_3_2_1B is not set" in message
    assert "export LLAMA_WEIGHTS_LLAMA_3_2_1B=" in message
    # A path that holds no model is refused with a sentence, before any loading.
    monkeypatch.setenv("LLAMA_WEIGHTS_LLAMA_3_1_8B", str(tmp_path / "8b"))
    with pytest.raises(MissingWeightsError, match="holds no config.json"):
        weights_path(VARIANTS["llama-3.1-8b"])
    (tmp_path / "8b").mkdir()
    (tmp_path / "8b" / "config.json").write_text("{}")
    assert weights_path(VARIANTS["llama-3.1-8b"]) == str(tmp_path / "8b")
    monkeypatch.setenv("LLAMA_WEIGHTS_LLAMA_3_1_8B", "s3://bucket/models/8b")
    assert weights_path(VARIANTS["llama-3.1-8b"]) == "s3://bucket/models/8b"
    assert weights_path(VARIANTS["tiny"]) is None


def test_real_variants_train_like_their_size():
    one_b, eight_b = VARIANTS["llama-3.2-1b"].train, VARIANTS["llama-3.1-8b"].train
    assert (one_b.seq_len, one_b.micro_batch_size, one_b.grad_accum_steps) == (2048, 4, 8)
    assert one_b.gradient_checkpointing and eight_b.gradient_checkpointing
    assert one_b.tokens_per_step == eight_b.tokens_per_step == 65_536
    assert VARIANTS["tiny"].train.planned_steps() == 512  # 262,144 tokens / 512 per step


# --- config ------------------------------------------------------------------------------------


def test_train_config_round_trips_through_json():
    cfg = dataclasses.replace(SHORT, max_tokens=4096)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["target_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig keys: \\['lr'\\]"):
        TrainConfig.from_dict({"lr": 1.0})


def test_budget_is_whichever_comes_first():
    cfg = dataclasses.replace(SHORT, max_steps=100)  # 128 tokens per step
    assert cfg.tokens_per_step == 128
    assert dataclasses.replace(cfg, max_tokens=5 * 128 + 127).planned_steps() == 5
    assert dataclasses.replace(cfg, max_tokens=10**9).planned_steps() == 100
    assert cfg.planned_steps() == 100
    with pytest.raises(ValueError, match="less than one optimizer step"):
        dataclasses.replace(cfg, max_tokens=127)


# --- data order --------------------------------------------------------------------------------


def test_micro_batches_visit_every_block_once_per_epoch():
    blocks = torch.arange(5).view(5, 1).expand(5, 3)  # block i is all i
    cfg = dataclasses.replace(SHORT, micro_batch_size=2, seed=3)
    state = LoopState()
    stream = micro_batches(blocks, state, cfg)
    rows = torch.cat([next(stream) for _ in range(5)])[:, 0].tolist()  # 10 rows, 2 epochs
    assert sorted(rows[:5]) == [0, 1, 2, 3, 4]
    assert sorted(rows[5:]) == [0, 1, 2, 3, 4]
    assert rows[:5] == epoch_order(5, seed=3, epoch=0).tolist()
    assert rows[5:] == epoch_order(5, seed=3, epoch=1).tolist()
    assert (state.epoch, state.offset) == (1, 5)


# --- the loop ----------------------------------------------------------------------------------


def test_short_finetune_learns_and_counts_exactly(trained):
    assert trained.steps == 8
    assert len(trained.losses) == 8
    assert trained.tokens_seen == 8 * 4 * 32
    # Untrained: about ln(320) = 5.77; eight steps must take off more than one nat.
    assert trained.losses[0] == pytest.approx(5.77, abs=0.1)
    assert trained.losses[-1] < trained.losses[0] - 1.0
    # LoRA r=8 on all seven projections of 2 layers (9,248 each) + embeddings and head (2 x 20,480).
    assert trained.trainable_parameters == 2 * 9_248 + 2 * 320 * 64
    assert trained.peak_memory_bytes > 0 and trained.seconds > 0
    assert not trained.model.training


def test_finetune_is_deterministic_for_a_seed(tokenizer, blocks, trained):
    calls: list[tuple[int, float, int]] = []
    again = finetune_lora(
        build_tiny_llama(SMALL, tokenizer, seed=0),
        blocks,
        SHORT,
        "cpu",
        on_step=lambda *a: calls.append(a),
    )
    assert again.losses == pytest.approx(trained.losses, abs=1e-6)
    assert [(s, n) for s, _, n in calls] == [(3, 384), (6, 768), (8, 1024)]
    other_seed = finetune_lora(
        build_tiny_llama(SMALL, tokenizer, seed=0),
        blocks,
        dataclasses.replace(SHORT, seed=1),
        "cpu",
    )
    assert other_seed.losses[-1] != pytest.approx(trained.losses[-1], abs=1e-6)


@pytest.mark.parametrize("modules_to_save", [(), ("embed_tokens", "lm_head")])
def test_gradient_checkpointing_does_not_change_the_losses(tokenizer, blocks, modules_to_save):
    # LoRA only (the real variants' setting: frozen embeddings) and with trained embeddings.
    cfg = dataclasses.replace(SHORT, modules_to_save=modules_to_save)
    runs = {}
    for checkpointing in (False, True):
        runs[checkpointing] = finetune_lora(
            build_tiny_llama(SMALL, tokenizer, seed=0),
            blocks,
            dataclasses.replace(cfg, gradient_checkpointing=checkpointing),
            "cpu",
        )
        assert (
            runs[checkpointing].model.base_model.model.is_activation_checkpointing is checkpointing
        )
    assert runs[True].losses == pytest.approx(runs[False].losses, abs=1e-5)
    assert runs[True].losses[-1] < runs[True].losses[0]


def test_finetune_rejects_blocks_of_the_wrong_length(tokenizer, blocks):
    with pytest.raises(ValueError, match="cfg.seq_len is 64"):
        finetune_lora(
            build_tiny_llama(SMALL, tokenizer, seed=0),
            blocks,
            dataclasses.replace(SHORT, seq_len=64),
            "cpu",
        )


# --- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_FILES = {
    "adapter/README.md",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "tokenizer/chat_template.jinja",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "trainer_state.json",
}


def test_save_load_round_trip_gives_identical_logits(tokenizer, trained, tmp_path):
    out = tmp_path / "models" / "tiny" / "v1"
    manifest = save_finetuned(trained.model, tokenizer, out, trained.trainer_state())
    assert set(manifest["files"]) == CHECKPOINT_FILES
    assert sorted(p.name for p in out.parent.iterdir()) == ["v1"]  # no temp dirs left
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest

    state = read_trainer_state(out)
    assert state["losses"] == trained.losses
    assert (state["steps"], state["tokens_seen"]) == (8, 1024)
    assert TrainConfig.from_dict(state["config"]) == SHORT

    saved_tok = load_finetuned_tokenizer(out)
    base = build_tiny_llama(SMALL, saved_tok, seed=0)
    x = torch.tensor([[0, 5, 9, 17, 33, 1, 64, 100]])
    with torch.no_grad():
        base_logits = base(input_ids=x).logits
        loaded = load_finetuned(out, base)
        expected = trained.model(input_ids=x).logits
        got = loaded(input_ids=x).logits
    assert torch.equal(got, expected)
    assert not torch.allclose(got, base_logits, atol=1e-3)  # the adapter really is applied


def test_checkpoint_can_carry_its_base_model(tokenizer, trained, tmp_path):
    source = tmp_path / "base_src"
    build_tiny_llama(SMALL, tokenizer, seed=0).save_pretrained(
        source
    )  # what `trained` started from
    out = tmp_path / "ckpt"
    manifest = save_finetuned(trained.model, tokenizer, out, {}, base_model_dir=source)
    base_files = {f"base/{p.name}" for p in source.iterdir()}
    assert "base/model.safetensors" in base_files
    assert set(manifest["files"]) == CHECKPOINT_FILES | base_files
    loaded = load_finetuned(out, AutoModelForCausalLM.from_pretrained(out / "base"))
    x = torch.tensor([[0, 5, 9, 17, 33, 1, 64, 100]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, trained.model(input_ids=x).logits)


def test_save_replaces_an_existing_checkpoint(tokenizer, trained, tmp_path):
    out = tmp_path / "ckpt"
    save_finetuned(trained.model, tokenizer, out, {"run": 1})
    save_finetuned(trained.model, tokenizer, out, {"run": 2})
    assert read_trainer_state(out) == {"run": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_failed_save_leaves_the_old_checkpoint_intact(tokenizer, trained, tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    save_finetuned(trained.model, tokenizer, out, {"run": 1})
    before = (out / "manifest.json").read_text()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_finetuned(trained.model, tokenizer, out, {"run": 2})
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_corrupted_checkpoint_is_detected(tokenizer, trained, tmp_path):
    out = tmp_path / "ckpt"
    save_finetuned(trained.model, tokenizer, out, trained.trainer_state())
    weights = out / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="adapter/adapter_model.safetensors: sha256"):
        load_finetuned(out, build_tiny_llama(SMALL, tokenizer, seed=0))

    (out / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(CorruptCheckpointError, match="tokenizer/tokenizer.json: missing"):
        load_finetuned(out, build_tiny_llama(SMALL, tokenizer, seed=0))

    (out / "manifest.json").unlink()
    with pytest.raises(CorruptCheckpointError, match="no manifest.json"):
        load_finetuned(out, build_tiny_llama(SMALL, tokenizer, seed=0))
