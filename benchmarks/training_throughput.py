"""Training benchmark: the trainer against a plain peft loop, packing against padding,
and what a checkpoint and a resume cost.

Run: `.venv/bin/python -m benchmarks.training_throughput [--steps N]`. Writes
`benchmarks/results/training_throughput.{json,md}`.

1. Trainer vs baseline: a step of our loop (`LoRAFinetuneRecipe.train_step`:
   micro-batch stream, grad clipping, cosine schedule) against the plainest peft step (forward,
   backward, AdamW step) on the same model, sequence length, batch and LoRA
   settings, interleaved step by step in this process to share the noise.
2. Packing vs padding: useful (non-padding) training tokens per second on the
   bundled sample corpus, for eos-joined packed blocks against one document per
   row padded to the longest in its batch (truncated at seq_len; the usual
   `DataCollatorWithPadding` recipe), same model, batch and step count.
3. Resume cost: seconds to write one full training checkpoint, and to find,
   verify and load the newest one (the time a resume adds to a run).

Load conditions (os.getloadavg) and peak RSS are recorded with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import get_cosine_schedule_with_warmup

from benchmarks._common import conditions, peak_rss_mb, write_results
from llama_assets.ingest.readers import iter_batch
from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.checkpointer import (
    latest_valid_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from llama_assets.training.config import TrainConfig
from llama_assets.training.dataset import pack_token_ids, tokenize_texts
from llama_assets.training.recipe import (
    ADAM_BETAS,
    LoRAFinetuneRecipe,
    finetune_lora,
    prepare_lora_model,
)
from llama_assets.training.state import LoopState
from llama_assets.training.tokenizer import train_bpe_tokenizer
from llama_assets.training.variants import VARIANTS

SAMPLE = Path(__file__).resolve().parents[1] / "llama_assets" / "sample_data"
TINY = VARIANTS["tiny"]


def sample_texts() -> list[str]:
    texts = []
    for part in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        for item in iter_batch(part, "sample", part.name):
            text = getattr(item, "text", None)
            if text:
                texts.append(text)
    return texts


def bench_config(steps: int, seq_len: int, batch: int) -> TrainConfig:
    # LoRA only, no dropout: the baseline and the trainer do identical arithmetic.
    return dataclasses.replace(
        TINY.train,
        seq_len=seq_len,
        micro_batch_size=batch,
        grad_accum_steps=1,
        max_steps=steps,
        max_tokens=None,
        warmup_steps=1,
        lora_dropout=0.0,
        modules_to_save=(),
        checkpoint_every=0,
    )


def plain_peft_model(model, cfg: TrainConfig):
    """The textbook peft setup (the baseline): get_peft_model and AdamW, nothing else."""
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
    )
    peft_model = get_peft_model(model, lora)
    peft_model.config.use_cache = False
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        betas=ADAM_BETAS,
    )
    return peft_model.train(), optimizer


def trainer_vs_baseline(tokenizer, blocks, cfg: TrainConfig, steps: int) -> dict:
    """Per-step times, interleaved: one step of our loop, then one plain peft step.

    Interleaving step by step puts both sides under the same load at the same
    moment, which whole-run timings on a shared machine cannot (identical runs
    differed by up to 2x here). Our step is the recipe's `train_step` (its
    micro-batch stream, optimizer, scheduler and gradient clipping): the body of
    `finetune_lora`'s loop. The first step of each side is warm-up, not timed.
    """
    ours = LoRAFinetuneRecipe(dataclasses.replace(cfg, max_steps=steps + 1), "cpu")
    ours.setup(build_tiny_llama(TINY, tokenizer, seed=0), blocks)
    ours.model.train()
    plain, plain_opt = plain_peft_model(build_tiny_llama(TINY, tokenizer, seed=0), cfg)
    ours_s, plain_s = [], []
    for step in range(steps + 1):
        started = time.perf_counter()
        ours.train_step()
        ours_s.append(time.perf_counter() - started)
        rows = torch.arange(step * cfg.micro_batch_size, (step + 1) * cfg.micro_batch_size)
        batch = blocks[rows % blocks.shape[0]]
        started = time.perf_counter()
        loss = plain(input_ids=batch, labels=batch).loss
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        plain_s.append(time.perf_counter() - started)
    ours_s, plain_s = ours_s[1:], plain_s[1:]
    tokens = cfg.tokens_per_step
    ours_tps = tokens / statistics.median(ours_s)
    theirs_tps = tokens / statistics.median(plain_s)
    return {
        "timed_steps": steps,
        "tokens_per_step": tokens,
        "trainer_tokens_per_s": round(ours_tps, 1),
        "plain_peft_tokens_per_s": round(theirs_tps, 1),
        "ratio_trainer_over_plain": round(ours_tps / theirs_tps, 3),
        "ratio_of_fastest_steps": round(min(plain_s) / min(ours_s), 3),
        "trainer_step_seconds": [round(x, 3) for x in ours_s],
        "plain_step_seconds": [round(x, 3) for x in plain_s],
    }


def padded_batches(tokenizer, texts, seq_len: int, batch: int) -> list[tuple]:
    """One document per row, truncated at seq_len, padded to the longest in its batch."""
    ids = [
        row[: seq_len - 1] + [tokenizer.eos_token_id] for row in tokenize_texts(tokenizer, texts)
    ]
    out = []
    for start in range(0, len(ids), batch):
        rows = ids[start : start + batch]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        out.append((input_ids, mask, labels))
    return out


def packing_vs_padding(tokenizer, texts, cfg: TrainConfig, steps: int) -> dict:
    """Useful tokens/s of packed blocks against padded documents, steps interleaved."""
    device = torch.device("cpu")
    blocks = pack_token_ids(tokenize_texts(tokenizer, texts), cfg.seq_len, tokenizer.eos_token_id)
    usable = (blocks.shape[0] // cfg.micro_batch_size) * cfg.micro_batch_size
    packed = [(b, torch.ones_like(b), b) for b in blocks[:usable].split(cfg.micro_batch_size)]
    # Shuffle documents deterministically so batches mix lengths as training would.
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0)).tolist()
    padded = padded_batches(tokenizer, [texts[i] for i in order], cfg.seq_len, cfg.micro_batch_size)
    sides = {}
    for name, batches in (("packed", packed), ("padded", padded)):
        model = prepare_lora_model(build_tiny_llama(TINY, tokenizer, seed=0), cfg, device).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        sides[name] = {
            "model": model,
            "opt": optimizer,
            "batches": batches,
            "s": 0.0,
            "u": 0,
            "c": 0,
        }
    for step in range(steps + 1):  # step 0 is warm-up
        for side in sides.values():
            input_ids, mask, labels = side["batches"][step % len(side["batches"])]
            started = time.perf_counter()
            loss = side["model"](input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            side["opt"].step()
            side["opt"].zero_grad(set_to_none=True)
            if step:
                side["s"] += time.perf_counter() - started
                side["u"] += int(mask.sum())
                side["c"] += input_ids.numel()
    p_, d_ = sides["packed"], sides["padded"]
    return {
        "documents": len(texts),
        "steps": steps,
        "packed_useful_tokens_per_s": round(p_["u"] / p_["s"], 1),
        "padded_useful_tokens_per_s": round(d_["u"] / d_["s"], 1),
        "ratio_packed_over_padded": round((p_["u"] / p_["s"]) / (d_["u"] / d_["s"]), 3),
        "packed_useful_fraction": round(p_["u"] / p_["c"], 3),
        "padded_useful_fraction": round(d_["u"] / d_["c"], 3),
        "padded_truncated_documents": sum(
            1 for r in tokenize_texts(tokenizer, texts) if len(r) >= cfg.seq_len
        ),
    }


def resume_cost(tokenizer, blocks, cfg: TrainConfig, repeats: int = 3) -> dict:
    cfg = dataclasses.replace(cfg, max_steps=2, modules_to_save=TINY.train.modules_to_save)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        finetune_lora(
            build_tiny_llama(TINY, tokenizer, seed=0), blocks, cfg, device, checkpoint_dir=root
        )
        newest, _ = latest_valid_checkpoint(root)
        size = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
        model = prepare_lora_model(build_tiny_llama(TINY, tokenizer, seed=0), cfg, device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        scheduler = get_cosine_schedule_with_warmup(optimizer, 1, cfg.max_steps)
        loads, saves = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            found, _ = latest_valid_checkpoint(root)
            state = load_training_checkpoint(found, model, optimizer, scheduler, cfg, device)
            loads.append(time.perf_counter() - started)
            started = time.perf_counter()
            save_training_checkpoint(
                Path(tmp) / "saves", model, optimizer, scheduler, state, cfg, device
            )
            saves.append(time.perf_counter() - started)
            assert isinstance(state, LoopState)
    return {
        "checkpoint_bytes": size,
        "trainable_parameters_incl_embeddings": sum(
            p.numel() for p in model.parameters() if p.requires_grad
        ),
        "write_checkpoint_s": round(statistics.median(saves), 3),
        "find_verify_load_s": round(statistics.median(loads), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10, help="timed steps, packing vs padding")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per side")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    before = conditions()
    texts = sample_texts()
    tokenizer = train_bpe_tokenizer(texts, vocab_size=TINY.vocab_size)
    cfg = bench_config(args.steps, args.seq_len, args.batch)
    blocks = pack_token_ids(tokenize_texts(tokenizer, texts), cfg.seq_len, tokenizer.eos_token_id)

    figures = {
        "trainer_vs_plain_peft": trainer_vs_baseline(tokenizer, blocks, cfg, args.rounds),
        "packing_vs_padding": packing_vs_padding(tokenizer, texts, cfg, args.steps),
        "resume": resume_cost(tokenizer, blocks, cfg),
    }
    payload = {
        "model": f"tiny Llama (hidden {TINY.hidden_size}, {TINY.num_hidden_layers} layers, "
        f"vocab {len(tokenizer)}), LoRA r={cfg.lora_r} on all 7 projections, CPU",
        "seq_len": cfg.seq_len,
        "micro_batch": cfg.micro_batch_size,
        "torch_threads": torch.get_num_threads(),
        "conditions_before": before,
        "conditions_after": conditions(),
        "peak_rss_mb": peak_rss_mb(),
        **figures,
    }
    t, p, r = (figures[k] for k in ("trainer_vs_plain_peft", "packing_vs_padding", "resume"))
    after = payload["conditions_after"]["loadavg_1_5_15"]
    lines = [
        "# Training throughput",
        "",
        f"{payload['model']}; sequence {cfg.seq_len}, batch {cfg.micro_batch_size}, "
        f"{args.steps} steps a run. Load average before {before['loadavg_1_5_15']}, "
        f"after {after} ({before['cpus']} CPUs, shared); peak RSS {payload['peak_rss_mb']} MB.",
        "",
        "| measure | ours | baseline | ratio |",
        "|---|---|---|---|",
        f"| training tokens/s: our loop's step vs a plain peft step (median of "
        f"{args.rounds} interleaved steps) | {t['trainer_tokens_per_s']} "
        f"| {t['plain_peft_tokens_per_s']} | {t['ratio_trainer_over_plain']} "
        f"(fastest steps: {t['ratio_of_fastest_steps']}) |",
        f"| useful tokens/s: packed vs padded to the batch's longest "
        f"({p['documents']} sample docs) | {p['packed_useful_tokens_per_s']} "
        f"| {p['padded_useful_tokens_per_s']} | {p['ratio_packed_over_padded']} |",
        f"| useful fraction of computed tokens | {p['packed_useful_fraction']} "
        f"| {p['padded_useful_fraction']} | |",
        "",
        f"Padding truncates {p['padded_truncated_documents']} of {p['documents']} documents "
        f"at {cfg.seq_len} tokens; packing loses none of their text.",
        "",
        f"Resume cost (the tiny variant's trainable set, "
        f"{r['trainable_parameters_incl_embeddings']:,} parameters; checkpoint "
        f"{r['checkpoint_bytes'] / 2**20:.1f} MiB): writing a full checkpoint "
        f"{r['write_checkpoint_s']} s; finding, verifying (sha256) and loading the newest "
        f"{r['find_verify_load_s']} s.",
        "",
    ]
    markdown = "\n".join(lines)
    write_results("training_throughput", payload, markdown)


if __name__ == "__main__":
    main()
