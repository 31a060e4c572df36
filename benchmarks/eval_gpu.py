"""The eval's model-side passes on a GPU: batched bf16 against one-at-a-time, and
bf16 against float32 figures, on a random-init Llama the size of Llama-3.2-1B.

Needs only torch, transformers and tokenizers (no Dagster, no data root), so it
runs on a bare GPU machine:

    python -m benchmarks.eval_gpu --out results.json

Measures, for the bits-per-byte pass (``evals.perplexity.document_loss``) and
greedy generation (``evals.generation.greedy_ids``), tokens/s at batch 1 and at
the GPU default batch (32), and checks that batching and bf16 change the
figures only within rounding; then the serving figures (TTFT, tokens/s, peak
CUDA memory) of ``evals.serving``.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evals.generation import greedy_ids
from evals.perplexity import document_loss
from evals.serving import serving_figures
from llama_assets.training.tokenizer import train_bpe_tokenizer

_WORDS = (
    "the index model data batch token query search retrieval answer training eval "
    "server request latency memory device checkpoint version report gate alias "
    "python function class module import return value error file path config"
)
WORDS = _WORDS.split()


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(200, 600))) + "." for _ in range(n)
    ]


def llama_1b_shaped(vocab: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def timed(run, device):
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    value = run()
    torch.cuda.synchronize(device)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="eval_gpu.json")
    parser.add_argument("--documents", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cuda")
    texts = corpus(args.documents)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=8192)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    tokens = sum(len(i) for i in ids)
    results: dict = {"device": torch.cuda.get_device_name(device), "documents": len(texts)}

    model = llama_1b_shaped(len(tokenizer)).to(device).eval()
    results["parameters"] = sum(p.numel() for p in model.parameters())
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    # bits per byte: fp32 weights under bf16 autocast (the eval's CUDA path), batch 1 vs 32
    document_loss(model, ids[:2], texts[:2], device, 512, eos, pad, 2)  # warm-up
    one, t_one = timed(lambda: document_loss(model, ids, texts, device, 512, eos, pad, 1), device)
    many, t_many = timed(
        lambda: document_loss(model, ids, texts, device, 512, eos, pad, 32), device
    )
    results["bpb_batch1"] = {"bits_per_byte": one.bits_per_byte, "tokens_per_s": tokens / t_one}
    results["bpb_batch32"] = {
        "bits_per_byte": many.bits_per_byte,
        "tokens_per_s": tokens / t_many,
    }
    # Weights loaded in bf16 (as the Llama variants are): how far that moves the figure.
    model_bf16 = model.to(torch.bfloat16)
    bf16, t_bf16 = timed(
        lambda: document_loss(model_bf16, ids, texts, device, 512, eos, pad, 32), device
    )
    results["bpb_bf16_weights_batch32"] = {
        "bits_per_byte": bf16.bits_per_byte,
        "tokens_per_s": tokens / t_bf16,
    }

    # greedy generation: 32 prompts of 32 tokens, 32 new tokens; batch 1 vs 32
    prompts = [[eos, *i[:32]] for i in ids[:32]]
    gen_one, g_one = timed(lambda: greedy_ids(model_bf16, prompts, 32, device, pad, 1), device)
    gen_many, g_many = timed(lambda: greedy_ids(model_bf16, prompts, 32, device, pad, 32), device)
    results["generation"] = {
        "batch1_tokens_per_s": 32 * 32 / g_one,
        "batch32_tokens_per_s": 32 * 32 / g_many,
        "batch_agreement": sum(a == b for a, b in zip(gen_one, gen_many, strict=True)) / 32,
    }
    torch.cuda.reset_peak_memory_stats(device)
    serving = serving_figures(model_bf16, tokenizer, device, 2.5, new_tokens=32)
    results["serving"] = {k: v for k, v in serving.items() if k not in ("ttft_ms", "outputs")}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
