"""The eval suite of a checkpoint: quality, retrieval and serving figures.

Pure: takes loaded models, texts and a search function, returns the report
dict that the gate reads and ``evals.report`` renders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from evals.perplexity import perplexity
from evals.retrieval import RetrievalQuery, evaluate

RETRIEVAL_K = 5
RETRIEVAL_MODES = ("vector", "fts", "hybrid")
# The mode whose figures head the report (and the gate): the default search mode.
PRIMARY_MODE = "hybrid"
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
    query_sets: dict[str, Sequence[RetrievalQuery]],
    search: Callable[[list[str], int, str], list[list[dict]]],
    k: int = RETRIEVAL_K,
    modes: Sequence[str] = RETRIEVAL_MODES,
    primary: str = PRIMARY_MODE,
) -> dict:
    """recall@k, MRR@k and nDCG@k per search mode and query set (and over all sets).

    ``search(texts, n, mode)`` returns ranked hits per text. The top-level
    ``recall@k``/``mrr@k``/``ndcg@k`` are the ``primary`` mode over all queries.
    """
    everything = [q for queries in query_sets.values() for q in queries]
    by_mode: dict[str, dict] = {}
    for mode in modes:

        def run(texts: list[str], n: int, mode: str = mode) -> list[list[dict]]:
            return search(texts, n, mode)

        by_mode[mode] = {name: evaluate(qs, run, k) for name, qs in query_sets.items()}
        by_mode[mode]["all"] = evaluate(everything, run, k)
    head = by_mode[primary]["all"] if primary in by_mode else by_mode[modes[0]]["all"]
    return {
        **{key: value for key, value in head.items() if key != "queries"},
        "queries": len(everything),
        "k": k,
        "primary_mode": primary if primary in by_mode else modes[0],
        "query_sets": {name: len(qs) for name, qs in query_sets.items()},
        "modes": by_mode,
    }
