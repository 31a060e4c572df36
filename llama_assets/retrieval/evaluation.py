"""The retrieval eval against the live index: query sets in, figures out.

Used by ``eval_report`` (and anything else that wants the figures): builds the
query sets (the user's golden set, generated heading and sentence queries from
the indexed chunks), runs each through ``search`` in every mode, and returns
the figures of ``evals.suite.retrieval`` plus the table version they describe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evals.retrieval import heading_queries, read_golden_set, sentence_queries
from evals.suite import retrieval
from llama_assets.retrieval.search import search
from resources.embedder import EmbedderResource

if TYPE_CHECKING:
    import lancedb

# Generated queries are drawn from at most this many chunks (bounded memory).
SAMPLE_CHUNKS = 20_000


def query_sets(table: lancedb.table.Table, golden_path: Path, n: int) -> tuple[dict, list[str]]:
    sample = (
        table.search()
        .select(["chunk_id", "doc_id", "title", "headings", "text"])
        .limit(SAMPLE_CHUNKS)
        .to_arrow()
        .to_pylist()
    )
    golden = read_golden_set(golden_path)
    sets = {
        "heading": heading_queries(sample, n),
        "sentence": sentence_queries(sample, n),
    }
    if golden.queries:
        sets = {"golden": golden.queries, **sets}
    return sets, golden.errors


def evaluate_index(
    table: lancedb.table.Table, embedder: EmbedderResource, golden_path: Path, n: int = 50
) -> tuple[dict, list[str]]:
    sets, errors = query_sets(table, golden_path, n)

    def run(texts: list[str], k: int, mode: str) -> list[list[dict]]:
        return search(table, embedder.encode, texts, k, mode)

    figures = retrieval(sets, run)
    figures["table_version"] = table.version
    figures["table_rows"] = table.count_rows()
    figures["golden_set"] = str(golden_path) if "golden" in sets else None
    figures["golden_errors"] = len(errors)
    return figures, errors


def retrieval_metadata(figures: dict) -> dict:
    """``retrieval/<mode>/<metric>`` floats for the UI's plots, over all queries
    (plain numbers: Dagster turns them into float and int metadata)."""
    k = figures["k"]
    out = {}
    for mode, by_set in figures["modes"].items():
        for metric in ("recall", "mrr", "ndcg"):
            value = by_set["all"][f"{metric}@{k}"]
            out[f"retrieval/{mode}/{metric}@{k}"] = float(round(value, 4))
    out["retrieval_queries"] = int(figures["queries"])
    out["retrieval_table_version"] = int(figures["table_version"])
    return out
