"""Retrieval quality on known-item queries derived from the corpus.

A known-item query is a sentence taken from the middle of a chunk; the one
relevant answer is that chunk's document. It needs no labels, so it runs on any
corpus, and it still catches a broken index, mismatched vectors or a wrong
embedder. User-supplied golden sets come in a later issue.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MIN_QUERY_WORDS = 6
MAX_QUERY_WORDS = 30


@dataclass(frozen=True)
class KnownItemQuery:
    query: str
    doc_id: str
    chunk_id: str


def known_item_queries(chunks: Sequence[dict], n: int = 50, seed: int = 0) -> list[KnownItemQuery]:
    """Up to ``n`` queries, one per sampled chunk, chosen deterministically."""
    candidates = []
    for chunk in sorted(chunks, key=lambda c: c["chunk_id"]):
        sentences = [
            s.strip()
            for s in _SENTENCE.split(chunk["text"])
            if MIN_QUERY_WORDS <= len(s.split()) <= MAX_QUERY_WORDS
        ]
        if sentences:
            middle = sentences[len(sentences) // 2]
            candidates.append(KnownItemQuery(middle, chunk["doc_id"], chunk["chunk_id"]))
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, min(n, len(candidates))), key=lambda q: q.chunk_id)


def recall_and_mrr(
    queries: Sequence[KnownItemQuery],
    search: Callable[[list[str], int], list[list[str]]],
    k: int = 5,
) -> dict[str, float]:
    """``search(queries, k)`` returns ranked doc ids per query."""
    if not queries:
        return {f"recall@{k}": 0.0, f"mrr@{k}": 0.0, "queries": 0}
    ranked = search([q.query for q in queries], k)
    hits, reciprocal = 0, 0.0
    for query, doc_ids in zip(queries, ranked, strict=True):
        if query.doc_id in doc_ids[:k]:
            hits += 1
            reciprocal += 1.0 / (doc_ids.index(query.doc_id) + 1)
    return {
        f"recall@{k}": hits / len(queries),
        f"mrr@{k}": reciprocal / len(queries),
        "queries": len(queries),
    }
