"""ANN index against exact search on the same LanceDB table, and where it pays off.

Vectors: synthetic, 384-d, L2-normalised, clustered like sentence embeddings
(``CLUSTERS`` centres, each point a centre plus Gaussian noise, so that
neighbourhoods are dense and recall is not trivially high as it is on uniform
noise). Queries are fresh points drawn the same way. At each table size the
baseline is exact search (``bypass_vector_index``) on the same table; the ANN
index is the one ``rag_index`` builds (``maintain_indexes``: IVF_HNSW_SQ,
cosine, refine_factor 10). Reported: p50/p95 latency of both, their ratio, and
recall@10 of ANN against exact. Then rows are added after the build and
searched before ``optimize`` to check they are found.

    .venv/bin/python benchmarks/retrieval_index.py [--sizes 5000,10000,20000,50000,100000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import conditions, peak_rss_mb, percentile, write_results  # noqa: E402
from llama_assets.retrieval import index  # noqa: E402

DIM = 384
CLUSTERS = 2000
NOISE = 0.6  # relative to the centre's norm: neighbours are close but not duplicates
QUERIES = 200
K = 10


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    which = rng.integers(0, len(centres), n)
    v = centres[which] + rng.normal(scale=NOISE / np.sqrt(DIM), size=(n, DIM))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(vectors: np.ndarray, offset: int, batch: str) -> pa.Table:
    n = len(vectors)
    ids = [f"c{offset + i}" for i in range(n)]
    return pa.table(
        {
            "chunk_id": ids,
            "doc_id": ids,
            "source": ["bench"] * n,
            "batch": [batch] * n,
            "title": [None] * n,
            "headings": [""] * n,
            "ordinal": pa.array(np.zeros(n, np.int32)),
            "char_start": np.zeros(n, np.int64),
            "char_end": np.zeros(n, np.int64),
            "text": [f"synthetic chunk {offset + i}" for i in range(n)],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )


def timed_search(table, queries, exact):
    latencies, ids = [], []
    for q in queries:
        started = time.perf_counter()
        hits = index.vector_search(table, q, K, exact=exact)
        latencies.append((time.perf_counter() - started) * 1000)
        ids.append([h["chunk_id"] for h in hits])
    return latencies, ids


def recall(ann: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(ann, exact, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5000,10000,20000,50000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(max(sizes), rng, centres)
    queries = clustered(QUERIES, rng, centres)
    before = conditions()
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        for size in sizes:
            db = index.connect(tmp / f"n{size}")
            table = index.open_table(db, DIM)
            for start in range(0, size, 20_000):
                stop = min(size, start + 20_000)
                table.add(rows(data[start:stop], start, "b"))
            exact_ms, exact_ids = timed_search(table, queries, exact=True)
            started = time.perf_counter()
            index.maintain_indexes(table, ann_min_rows=0)
            build_s = time.perf_counter() - started
            ann_ms, ann_ids = timed_search(table, queries, exact=False)
            entry = {
                "rows": size,
                "exact_p50_ms": round(percentile(exact_ms, 50), 2),
                "exact_p95_ms": round(percentile(exact_ms, 95), 2),
                "ann_p50_ms": round(percentile(ann_ms, 50), 2),
                "ann_p95_ms": round(percentile(ann_ms, 95), 2),
                "ann_over_exact_p50": round(percentile(ann_ms, 50) / percentile(exact_ms, 50), 3),
                "recall@10": round(recall(ann_ids, exact_ids), 4),
                "index_build_s": round(build_s, 1),
            }
            if size == max(sizes):
                # Rows added after the build: found before optimize() folds them in?
                extra = clustered(1000, rng, centres)
                table.add(rows(extra, 10_000_000, "late"))
                stats = table.index_stats(index.VECTOR_INDEX)
                probes = extra[:100]
                found = sum(
                    index.vector_search(table, v, K)[0]["chunk_id"] == f"c{10_000_000 + i}"
                    for i, v in enumerate(probes)
                )
                entry["late_rows_unindexed"] = stats.num_unindexed_rows
                entry["late_rows_found_at_rank_1"] = f"{found}/{len(probes)}"
            results.append(entry)
            print(entry, flush=True)
            shutil.rmtree(tmp / f"n{size}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {
        "benchmark": "retrieval_index",
        "baseline": "exact search (bypass_vector_index) on the same table",
        "vectors": f"synthetic clustered {DIM}-d, {CLUSTERS} clusters, noise {NOISE}",
        "index": "IVF_HNSW_SQ cosine, refine_factor 10 (maintain_indexes)",
        "queries": QUERIES,
        "k": K,
        "results": results,
        "conditions_before": before,
        "conditions_after": conditions(),
        "peak_rss_mb": peak_rss_mb(),
    }
    lines = [
        "# ANN index vs exact search (LanceDB, cosine)",
        "",
        f"Baseline: {payload['baseline']}. Vectors: {payload['vectors']}. "
        f"{QUERIES} queries, k={K}. Index: {payload['index']}.",
        "",
        "| rows | exact p50 ms | exact p95 ms | ANN p50 ms | ANN p95 ms | ANN/exact p50 "
        "| recall@10 | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']} | {r['exact_p50_ms']} | {r['exact_p95_ms']} | {r['ann_p50_ms']} "
            f"| {r['ann_p95_ms']} | {r['ann_over_exact_p50']} | {r['recall@10']} "
            f"| {r['index_build_s']} |"
        )
    last = results[-1]
    if "late_rows_found_at_rank_1" in last:
        lines += [
            "",
            f"Rows added after the build ({last['late_rows_unindexed']} unindexed): "
            f"{last['late_rows_found_at_rank_1']} found at rank 1 before optimize().",
        ]
    lines += [
        "",
        f"Load (1/5/15 min) before {before['loadavg_1_5_15']}, after "
        f"{payload['conditions_after']['loadavg_1_5_15']} on {before['cpus']} CPUs; "
        f"peak RSS {payload['peak_rss_mb']} MB.",
    ]
    write_results("retrieval_index", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
