"""Training and generation with and without a competing CPU load, by torch thread count.

Run: `.venv/bin/python -m benchmarks.cpu_contention [--steps N]`. Writes
`benchmarks/results/cpu_contention.{json,md}`.

The baseline is torch's default: one intra-op thread per core the OS reports.
Against it, the platform's sizing (`llama_assets.base.parallel.torch_threads`:
the CPUs the process may use, less the cores other processes keep busy). Each
is measured on an idle machine and with a competing load (a process spinning
on one core, started before and stopped after), for
- training: median seconds of a step of the tiny variant's LoRA loop, as
  tokens per second;
- generation: greedy decoding of 48 new tokens from a 64-token prompt on the
  tiny model, as tokens per second.
The sizing reads the 1-minute load average, which needs about a minute to
show a new load; the benchmark reports both thread counts under both
conditions, and what the sizing chose in each.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import time

import torch

from benchmarks._common import conditions, peak_rss_mb, write_results
from benchmarks.training_throughput import TINY, bench_config, sample_texts
from llama_assets.base.parallel import torch_threads
from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.dataset import pack_token_ids, tokenize_texts
from llama_assets.training.recipe import LoRAFinetuneRecipe
from llama_assets.training.tokenizer import train_bpe_tokenizer


def _spin() -> None:
    while True:
        pass


def training_tps(tokenizer, blocks, cfg, steps: int) -> float:
    recipe = LoRAFinetuneRecipe(dataclasses.replace(cfg, max_steps=steps + 1), "cpu")
    recipe.setup(build_tiny_llama(TINY, tokenizer, seed=0), blocks)
    recipe.model.train()
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        recipe.train_step()
        times.append(time.perf_counter() - started)
    return cfg.tokens_per_step / statistics.median(times[1:])


def generation_tps(model, prompt: torch.Tensor, new_tokens: int = 48, repeats: int = 3) -> float:
    rates = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            started = time.perf_counter()
            out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=0)  # fmt: skip
            rates.append((out.shape[1] - prompt.shape[1]) / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def measure(tokenizer, blocks, cfg, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = build_tiny_llama(TINY, tokenizer, seed=0).eval()
    return {
        "threads": threads,
        "training_tokens_per_s": round(training_tps(tokenizer, blocks, cfg, steps), 1),
        "generation_tokens_per_s": round(generation_tps(model, blocks[:1, :64]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    texts = sample_texts()
    tokenizer = train_bpe_tokenizer(texts, vocab_size=TINY.vocab_size)
    cfg = bench_config(args.steps, seq_len=256, batch=4)
    blocks = pack_token_ids(tokenize_texts(tokenizer, texts), cfg.seq_len, tokenizer.eos_token_id)
    default = os.cpu_count() or 1
    results = {"conditions": conditions(), "rows": []}
    for load in ("idle", "one core busy"):
        spinner = None
        if load != "idle":
            spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
            spinner.start()
            time.sleep(2)
        try:
            chosen = torch_threads()
            for threads in sorted({default, 1}, reverse=True):
                row = measure(tokenizer, blocks, cfg, args.steps, threads)
                row.update(load=load, sizing_chose=chosen, baseline=threads == default)
                results["rows"].append(row)
                print(row, flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
    results["peak_rss_mb"] = peak_rss_mb()
    lines = [
        "# CPU contention: torch threads against a competing load",
        "",
        f"{results['conditions']}",
        "",
        "| load | threads | training tokens/s | generation tokens/s | vs baseline (train, gen) |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        base = next(r for r in results["rows"] if r["load"] == row["load"] and r["baseline"])
        ratio = (
            row["training_tokens_per_s"] / base["training_tokens_per_s"],
            row["generation_tokens_per_s"] / base["generation_tokens_per_s"],
        )
        lines.append(
            f"| {row['load']} | {row['threads']}{' (baseline)' if row['baseline'] else ''} | "
            f"{row['training_tokens_per_s']:,} | {row['generation_tokens_per_s']:,} | "
            f"{ratio[0]:.2f}x, {ratio[1]:.2f}x |"
        )
    lines += ["", f"peak RSS {results['peak_rss_mb']} MB"]
    write_results("cpu_contention", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
