"""Search the RAG index: one function for the CLI, the evals and any assistant.

``search(table, encode, queries, k, mode)`` answers many queries at once (the
query texts are embedded in one call) in one of three modes: ``vector``
(cosine, on the ANN index with exact re-ranking when the table has one),
``fts`` (BM25 on the full-text index) and ``hybrid`` (both, fused by
reciprocal rank).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llama_assets.retrieval.index import MODES, fts_search, hybrid_search, vector_search

if TYPE_CHECKING:
    import lancedb

Encode = Callable[[list[str]], np.ndarray]


def search(
    table: lancedb.table.Table,
    encode: Encode,
    queries: Sequence[str],
    k: int = 10,
    mode: str = "hybrid",
) -> list[list[dict[str, Any]]]:
    """Ranked hits (dicts with the table's columns and ``score``) per query."""
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}: choose one of {', '.join(MODES)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        # LanceDB reads a limit of 0 as "its default" (10 hits), so refuse it here.
        raise ValueError(f"the number of hits k must be a whole number of at least 1, not {k!r}")
    if not queries:
        return []
    if any(not isinstance(q, str) or not q.strip() for q in queries):
        raise ValueError("a search query must hold some text")
    if mode == "fts":
        return [fts_search(table, q, k) for q in queries]
    vectors = encode(list(queries))
    if mode == "vector":
        return [vector_search(table, v, k) for v in vectors]
    return [hybrid_search(table, q, v, k) for q, v in zip(queries, vectors, strict=True)]


def format_hits(hits: list[dict[str, Any]], width: int = 160) -> str:
    """Hits as the CLI prints them: rank, score, source/batch, title > headings, snippet."""
    lines = []
    for rank, hit in enumerate(hits, 1):
        where = hit.get("title") or ""
        headings = hit.get("headings") or ""
        if headings and not headings.startswith(where):
            where = f"{where} > {headings}" if where else headings
        elif headings:
            where = headings
        snippet = " ".join(str(hit["text"]).split())
        if len(snippet) > width:
            snippet = snippet[: width - 1] + "…"
        lines.append(
            f"{rank:>2}. {hit['score']:.4f}  {hit['source']}/{hit['batch']}  {where}\n"
            f"    doc {hit['doc_id']} chars {hit['char_start']}-{hit['char_end']}: {snippet}"
        )
    return "\n".join(lines)
