"""The eval suite of a checkpoint: quality, retrieval and serving figures.

Pure: takes loaded models, texts and a search function, returns the report
dict that the gate reads and ``evals.report`` renders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from evals.perplexity import perplexity
from evals.retrieval import KnownItemQuery, recall_and_mrr

RETRIEVAL_K = 5
GENERATION_TOKENS = 32


def quality(base, finetuned, validation_blocks: torch.Tensor, device) -> dict:
    base_ppl = perplexity(base, validation_blocks, device)
    tuned_ppl = perplexity(finetuned, validation_blocks, device)
    return {
        "base_perplexity": base_ppl,
        "finetuned_perplexity": tuned_ppl,
        "improvement": 1.0 - tuned_ppl / base_ppl,
        "validation_blocks": int(validation_blocks.shape[0]),
        "validation_tokens": int(validation_blocks.numel()),
    }


@torch.no_grad()
def serving(model, prompt_ids: torch.Tensor, device, new_tokens: int = GENERATION_TOKENS) -> dict:
    """First-token latency and greedy decode throughput on one prompt."""
    prompt = prompt_ids.unsqueeze(0).to(device)
    model.eval()
    started = time.perf_counter()
    model(input_ids=prompt)
    first_token = time.perf_counter() - started
    started = time.perf_counter()
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
    )
    seconds = time.perf_counter() - started
    generated = int(out.shape[1] - prompt.shape[1])
    return {
        "first_token_ms": first_token * 1000,
        "tokens_per_second": generated / seconds if seconds else 0.0,
        "generated_tokens": generated,
    }


def retrieval(
    queries: Sequence[KnownItemQuery], search: Callable[[list[str], int], list[list[str]]]
) -> dict:
    return {**recall_and_mrr(queries, search, k=RETRIEVAL_K), "k": RETRIEVAL_K}
