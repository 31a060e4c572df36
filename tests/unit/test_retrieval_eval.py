"""Retrieval metrics, golden sets and generated known-item queries."""

import json
import math

import pytest

from evals.retrieval import (
    RetrievalQuery,
    evaluate,
    heading_queries,
    query_metrics,
    read_golden_set,
    sentence_queries,
)
from evals.suite import retrieval


def test_metrics_by_hand():
    relevant = frozenset({"a", "b"})
    m = query_metrics(relevant, ["x", "a", "y", "b"], k=3)
    assert m["recall"] == 0.5
    assert m["mrr"] == 0.5
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg"] == pytest.approx((1 / math.log2(3)) / ideal)
    assert query_metrics(frozenset({"a"}), ["a"], k=5) == {"recall": 1.0, "mrr": 1.0, "ndcg": 1.0}
    assert query_metrics(frozenset({"a"}), ["b", "c"], k=5)["ndcg"] == 0.0


def test_doc_level_queries_collapse_chunks_to_documents():
    hits = [{"chunk_id": f"c{i}", "doc_id": d} for i, d in enumerate(["d1", "d1", "d1", "d2"])]
    doc_query = RetrievalQuery("q", relevant_doc_ids=("d2",))
    chunk_query = RetrievalQuery("q", relevant_chunk_ids=("c3",))
    figures = evaluate([doc_query, chunk_query], lambda texts, n: [hits, hits], k=2)
    # d2 is the 2nd distinct document (found); c3 is the 4th chunk (outside k=2).
    assert figures["recall@2"] == 0.5 and figures["mrr@2"] == 0.25 and figures["queries"] == 2


def test_golden_set_file_with_a_bad_line(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"query": "walrus", "relevant_doc_ids": ["d1"]}),
                json.dumps({"query": "yield", "relevant_chunk_ids": ["c1", "c2"], "id": "g2"}),
                json.dumps({"query": "no answer"}),
                "{not json",
            ]
        )
    )
    golden = read_golden_set(path)
    assert [(q.query, q.level, q.id) for q in golden.queries] == [
        ("walrus", "doc", "1"),
        ("yield", "chunk", "g2"),
    ]
    assert len(golden.errors) == 2 and golden.errors[0].startswith("line 3")
    assert read_golden_set(tmp_path / "missing.jsonl").queries == []


CHUNKS = [
    {"chunk_id": "c1", "doc_id": "d1", "title": "Errors", "headings": "Errors", "text": "x"},
    {
        "chunk_id": "c2",
        "doc_id": "d1",
        "title": "Errors",
        "headings": "Errors > The try statement",
        "text": "The try statement specifies handlers for a group of statements.",
    },
    {
        "chunk_id": "c3",
        "doc_id": "d1",
        "title": "Errors",
        "headings": "Errors > The try statement",
        "text": "More text.",
    },
    {"chunk_id": "c4", "doc_id": "d2", "title": "B", "headings": "B > Lists", "text": "y"},
    {"chunk_id": "c5", "doc_id": "d3", "title": "C", "headings": "C > Shared name", "text": "z"},
    {"chunk_id": "c6", "doc_id": "d4", "title": "D", "headings": "D > Shared name", "text": "w"},
]


def test_heading_queries_answer_with_their_section():
    queries = heading_queries(CHUNKS)
    # "Errors" is the title, "Lists" one word, "Shared name" in two documents.
    assert [(q.query, q.relevant_chunk_ids, q.kind) for q in queries] == [
        ("The try statement", ("c2", "c3"), "heading")
    ]
    (sentence,) = sentence_queries(CHUNKS)
    assert sentence.relevant_doc_ids == ("d1",) and sentence.query.startswith("The try")


def test_suite_reports_every_mode_and_set():
    sets = {"heading": heading_queries(CHUNKS), "sentence": sentence_queries(CHUNKS)}
    by_mode = {
        "vector": [{"chunk_id": "c2", "doc_id": "d1"}, {"chunk_id": "c3", "doc_id": "d1"}],
        "fts": [{"chunk_id": "c9", "doc_id": "d9"}],
        "hybrid": [{"chunk_id": "c3", "doc_id": "d1"}],
    }
    calls = []

    def search(texts, n, mode):
        calls.append((mode, sorted(texts)))
        return [by_mode[mode]] * len(texts)

    figures = retrieval(sets, search, k=5)
    # Each query is searched once per mode, however many sets it is reported in.
    everything = sorted(q.query for qs in sets.values() for q in qs)
    assert calls == [(mode, everything) for mode in ("vector", "fts", "hybrid")]
    assert figures["primary_mode"] == "hybrid" and figures["queries"] == 2
    assert figures["modes"]["vector"]["all"]["recall@5"] == 1.0
    assert figures["modes"]["fts"]["all"]["recall@5"] == 0.0
    assert figures["modes"]["hybrid"]["heading"]["recall@5"] == 0.5
    assert figures["recall@5"] == figures["modes"]["hybrid"]["all"]["recall@5"] == 0.75
    assert set(figures["modes"]["hybrid"]["all"]) == {"recall@5", "mrr@5", "ndcg@5", "queries"}
