"""GPU figures for docs/scale.md, measured on one GPU with random weights (no
weights can be downloaded; throughput does not depend on their values).

1. Embedding: an encoder shaped as all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384,
   12 heads, FFN 1536), chunks of 256 tokens (the platform's budget), fp16,
   batch 512: chunks/s and tokens/s.
2. Fine-tune: Llama-3.1-70B-shaped decoder layers (hidden 8192, 64 heads, 8 KV
   heads, FFN 28672, vocab 128256), bf16, LoRA r=16 on the 7 projections (peft),
   sequence 4096, batch 1, forward + backward + AdamW step on the adapters.
   Models of 2 and 4 layers give the time of one layer and of the rest (embedding,
   head, loss); the 80-layer step time is the rest + 80 layers.

Run: python -m benchmarks.scale_gpu OUT_DIR   (needs torch, transformers, peft, CUDA).
results/scale_gpu.json: one run on an NVIDIA H200 (torch 2.11, transformers 5.17),
2026-11-26; docs/scale.md builds on it.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import torch


def timed(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def embedding_throughput(seq: int = 256, batch: int = 512) -> dict:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    model = BertModel(config).cuda().half().eval()
    ids = torch.randint(1000, 30000, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)

    @torch.inference_mode()
    def encode():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (out * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=-1)

    seconds = timed(encode, warmup=3, reps=20)
    return {
        "model": "BERT 6x384 (all-MiniLM-L6-v2 shape), fp16",
        "seq": seq,
        "batch": batch,
        "chunks_per_s": round(batch / seconds, 1),
        "tokens_per_s": round(batch * seq / seconds),
    }


def lora_step_seconds(layers: int, seq: int) -> tuple[float, int, int]:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=8192,
        intermediate_size=28672,
        num_attention_heads=64,
        num_key_value_heads=8,
        num_hidden_layers=layers,
        vocab_size=128256,
        max_position_embeddings=seq,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.use_cache = False
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (1, seq), device="cuda")

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, warmup=2, reps=5)
    peak = torch.cuda.max_memory_allocated()
    return seconds, peak, sum(p.numel() for p in trainable)


def llama70b_lora(seq: int = 4096) -> dict:
    t2, peak2, _ = lora_step_seconds(2, seq)
    gc.collect()
    torch.cuda.empty_cache()
    t4, peak4, trainable4 = lora_step_seconds(4, seq)
    per_layer = (t4 - t2) / 2
    rest = t2 - 2 * per_layer
    full = rest + 80 * per_layer
    # Forward 2N and backward ~2N FLOPs per token for frozen base weights (input
    # gradients only), N = 70.6e9 parameters; attention FLOPs left out.
    flops_per_token = 4 * 70.6e9
    return {
        "model": "Llama-3.1-70B shape (80 layers extrapolated from 2 and 4), bf16, LoRA r=16",
        "seq": seq,
        "step_s_2_layers": round(t2, 4),
        "step_s_4_layers": round(t4, 4),
        "per_layer_s": round(per_layer, 5),
        "rest_s": round(rest, 4),
        "full_step_s_80_layers": round(full, 3),
        "tokens_per_s_per_gpu": round(seq / full, 1),
        "achieved_tflops": round(flops_per_token * seq / full / 1e12, 1),
        "peak_mem_gib_4_layers": round(peak4 / 2**30, 1),
        "peak_mem_gib_2_layers": round(peak2 / 2**30, 1),
        "lora_params_per_layer": (trainable4 // 4),
    }


def main(out: str) -> None:
    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "embedding": embedding_throughput(),
        "llama70b_lora": llama70b_lora(),
    }
    print(json.dumps(results, indent=2))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "scale_gpu.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
