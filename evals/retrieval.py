"""Retrieval quality: golden sets, generated known-item queries, recall/MRR/nDCG@k.

Query sets, each a list of ``RetrievalQuery`` (a query text and its relevant
doc ids *or* chunk ids, binary relevance):

- ``golden``: supplied by users as JSON lines at ``<data root>/evals/retrieval_golden.jsonl``,
  one object per line: ``{"query": "...", "relevant_doc_ids": ["..."]}`` or
  ``{"query": "...", "relevant_chunk_ids": ["..."]}`` (optionally ``"id"``).
  Lines that do not parse are reported, never fatal.
- ``heading``: a section heading as the query and the chunks of its section
  as the answer (headings that occur in more than one document, or that are a
  document's own title, are skipped as ambiguous).
- ``sentence``: a sentence from the middle of a chunk; the answer is its document.

Generated queries need no labels, so they run on any corpus and still catch a
broken index, mismatched vectors or a wrong embedder.

Metrics, per query set and search mode: recall@k (share of relevant items in
the top k; for a single relevant item, hit rate), MRR@k and nDCG@k (binary
gains, ideal DCG over min(k, relevant) items). With doc-level relevance the
ranked chunk hits are collapsed to distinct doc ids first.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llama_assets.base.store import Location, as_location

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MIN_QUERY_WORDS = 6
MAX_QUERY_WORDS = 30
MIN_HEADING_WORDS = 2
HEADING_SEPARATOR = " > "


@dataclass(frozen=True)
class RetrievalQuery:
    query: str
    relevant_doc_ids: tuple[str, ...] = ()
    relevant_chunk_ids: tuple[str, ...] = ()
    kind: str = "golden"
    id: str = ""

    @property
    def level(self) -> str:
        return "chunk" if self.relevant_chunk_ids else "doc"

    @property
    def relevant(self) -> frozenset[str]:
        return frozenset(self.relevant_chunk_ids or self.relevant_doc_ids)


@dataclass
class GoldenSet:
    queries: list[RetrievalQuery] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_golden_set(path: Location | Path) -> GoldenSet:
    """Parse a golden-set jsonl file; bad lines are collected in ``errors``."""
    result = GoldenSet()
    path = as_location(path)
    if not path.is_file():
        return result
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            query = str(obj["query"]).strip()
            docs = tuple(str(x) for x in obj.get("relevant_doc_ids") or ())
            chunks = tuple(str(x) for x in obj.get("relevant_chunk_ids") or ())
            if not query or not (docs or chunks):
                raise ValueError("needs a query and relevant_doc_ids or relevant_chunk_ids")
            result.queries.append(
                RetrievalQuery(query, docs, chunks, "golden", str(obj.get("id", n)))
            )
        except (ValueError, KeyError, TypeError) as error:
            result.errors.append(f"line {n}: {error}")
    return result


def sentence_queries(chunks: Sequence[dict], n: int = 50, seed: int = 0) -> list[RetrievalQuery]:
    """Up to ``n`` queries, a middle sentence of a sampled chunk, answer its document."""
    candidates = []
    for chunk in sorted(chunks, key=lambda c: c["chunk_id"]):
        sentences = [
            s.strip()
            for s in _SENTENCE.split(chunk["text"])
            if MIN_QUERY_WORDS <= len(s.split()) <= MAX_QUERY_WORDS
        ]
        if sentences:
            middle = " ".join(sentences[len(sentences) // 2].split())
            candidates.append(
                RetrievalQuery(middle, (chunk["doc_id"],), (), "sentence", chunk["chunk_id"])
            )
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, min(n, len(candidates))), key=lambda q: q.id)


def heading_queries(chunks: Sequence[dict], n: int = 50, seed: int = 0) -> list[RetrievalQuery]:
    """Up to ``n`` queries, a section heading; answer the chunks of that section."""
    sections: dict[tuple[str, str], list[str]] = defaultdict(list)
    titles: dict[str, str] = {}
    for chunk in chunks:
        path = chunk.get("headings") or ""
        if path:
            sections[(chunk["doc_id"], path)].append(chunk["chunk_id"])
        titles[chunk["doc_id"]] = (chunk.get("title") or "").strip().lower()
    leaf_docs: Counter[str] = Counter()
    for _doc, path in {(d, p.split(HEADING_SEPARATOR)[-1].lower()) for d, p in sections}:
        leaf_docs[path] += 1
    candidates = []
    for (doc_id, path), chunk_ids in sorted(sections.items()):
        leaf = path.split(HEADING_SEPARATOR)[-1].strip()
        if (
            len(leaf.split()) < MIN_HEADING_WORDS
            or leaf_docs[leaf.lower()] > 1
            or leaf.lower() == titles.get(doc_id)
        ):
            continue
        candidates.append(
            RetrievalQuery(leaf, (), tuple(sorted(chunk_ids)), "heading", f"{doc_id}:{path}")
        )
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, min(n, len(candidates))), key=lambda q: q.id)


# --- metrics ------------------------------------------------------------------


def ranked_ids(query: RetrievalQuery, hits: Sequence[dict], k: int) -> list[str]:
    """The top ``k`` ids at the query's level (distinct doc ids for doc-level)."""
    if query.level == "chunk":
        return [h["chunk_id"] for h in hits][:k]
    return list(dict.fromkeys(h["doc_id"] for h in hits))[:k]


def query_metrics(relevant: frozenset[str], ranked: Sequence[str], k: int) -> dict[str, float]:
    top = list(ranked)[:k]
    gains = [1.0 if r in relevant else 0.0 for r in top]
    first = next((i for i, g in enumerate(gains) if g), None)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return {
        "recall": sum(gains) / len(relevant) if relevant else 0.0,
        "mrr": 1.0 / (first + 1) if first is not None else 0.0,
        "ndcg": dcg / ideal if ideal else 0.0,
    }


def evaluate(
    queries: Sequence[RetrievalQuery],
    search: Callable[[list[str], int], list[list[dict]]],
    k: int = 5,
    fetch: int | None = None,
) -> dict[str, float]:
    """Mean recall@k, MRR@k and nDCG@k of ``search(texts, fetch)`` (hits per query).

    ``fetch`` chunk hits are asked for (default 4k) so that doc-level queries
    still see k distinct documents after collapsing chunks.
    """
    if not queries:
        return {f"recall@{k}": 0.0, f"mrr@{k}": 0.0, f"ndcg@{k}": 0.0, "queries": 0}
    hits = search([q.query for q in queries], fetch or 4 * k)
    totals: Counter[str] = Counter()
    for query, query_hits in zip(queries, hits, strict=True):
        for name, value in query_metrics(
            query.relevant, ranked_ids(query, query_hits, k), k
        ).items():
            totals[name] += value
    n = len(queries)
    return {
        f"recall@{k}": totals["recall"] / n,
        f"mrr@{k}": totals["mrr"] / n,
        f"ndcg@{k}": totals["ndcg"] / n,
        "queries": n,
    }
