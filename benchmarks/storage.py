"""Benchmark: the platform on an S3 data root against a local one, same run.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python benchmarks/storage.py [--docs 400] [--rows 20000] [--queries 200]

Two measurements, each in its own subprocess (so its peak RSS is its own),
local and S3 alternately, against a real S3 server on loopback (SeaweedFS's
``weed mini``, which verifies checksums and conditional writes as S3 does) and
the machine's PostgreSQL (127.0.0.1:5432: the shared dedup index of an S3 root):

1. One batch through the data stage and the retrieval stage (every batch
   asset: read, validate, review queue, profile, dedup, chunk, embed, index),
   as `dg.materialize` runs it: the wall time on each root and their ratio
   (goal: S3 / local <= 1.5), each step's seconds, peak RSS.
2. Search on a ``chunks`` table of `--rows` rows (random unit vectors, the ANN
   index built as `rag_index` builds it): p50/p95 of vector and hybrid queries
   on the local table, on the S3 table read directly, and on the local read
   replica of the S3 table's current version that `search` and the eval use
   (goal: replica p95 within 2x of local); the replica's first fetch and its
   refresh after one more write.

Results: benchmarks/results/storage.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import conditions, percentile, write_results  # noqa: E402
from benchmarks.data_stage import PeakMemory, make_corpus  # noqa: E402

KEY = "bench/b1"


# --- children ------------------------------------------------------------------------------------


def stage_child(root: str, corpus: str) -> dict:
    """Land the corpus on `root`, then materialise every batch asset for it once."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    from llama_assets.definitions import resources_for
    from llama_assets.ingest.landing import add_to_landing
    from llama_assets.jobs import BATCH_ASSETS

    resources = resources_for()
    started = time.perf_counter()
    add_to_landing(Path(corpus), resources["storage"].layout.landing, "bench", "b1")
    landed = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
        instance.add_dynamic_partitions("batches", [KEY])
        started = time.perf_counter()
        result = dg.materialize(
            BATCH_ASSETS, instance=instance, resources=resources, partition_key=KEY
        )
        seconds = time.perf_counter() - started
        assert result.success
        steps = {}
        for record in instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.STEP_SUCCESS
        ).records:
            event = record.event_log_entry.dagster_event
            steps[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 2)
        chunks = result.asset_materializations_for_node("rag_index")[0].metadata
        rows = chunks.get("table_rows") or chunks.get("rows")
    return {
        "seconds": round(seconds, 2),
        "landing_seconds": round(landed, 2),
        "steps": steps,
        "index_rows": getattr(rows, "value", rows),
    }


def search_child(root: str, rows: int, queries: int) -> dict:
    """Build a `rows`-row chunks table at `root`; time queries on it (and, on S3,
    on its local read replica)."""
    import numpy as np
    import pyarrow as pa

    from llama_assets.retrieval import index
    from resources.vector_store import LanceDBResource

    dim = 384
    rng = np.random.default_rng(0)
    store = LanceDBResource(uri=f"{root}/lancedb")
    table = store.chunks_table(dim)
    words = [f"word{i}" for i in range(5000)]

    def batch(start: int, count: int, name: str) -> pa.Table:
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"c{start + i:07d}" for i in range(count)]
        texts = [" ".join(rng.choice(words, 40)) for _ in range(count)]
        return pa.table(
            {
                "chunk_id": ids,
                "doc_id": [f"d{(start + i) // 4:07d}" for i in range(count)],
                "source": ["bench"] * count,
                "batch": [name] * count,
                "title": [""] * count,
                "headings": [""] * count,
                "ordinal": pa.array([i % 4 for i in range(count)], pa.int32()),
                "char_start": pa.array([0] * count, pa.int32()),
                "char_end": pa.array([len(t) for t in texts], pa.int32()),
                "text": texts,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            }
        )

    started = time.perf_counter()
    step = 5000
    for start in range(0, rows, step):
        # One upsert per batch, as rag_index writes (an upsert replaces its batch's rows).
        name = f"b{start // step}"
        index.upsert_batch(table, batch(start, min(step, rows - start), name), "bench", name)
    index.maintain_indexes(table)
    build = time.perf_counter() - started
    probes = rng.standard_normal((queries, dim)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(words, 3)) for _ in range(queries)]

    def timed(open_table) -> dict:
        t = open_table()
        index.vector_search(t, probes[0], 10)  # first query: opens files, warms caches
        out = {}
        for mode in ("vector", "hybrid"):
            times = []
            for probe, text in zip(probes, texts, strict=True):
                began = time.perf_counter()
                if mode == "vector":
                    index.vector_search(t, probe, 10)
                else:
                    index.hybrid_search(t, text, probe, 10)
                times.append((time.perf_counter() - began) * 1000)
            out[mode] = {
                "p50_ms": round(percentile(times, 50), 2),
                "p95_ms": round(percentile(times, 95), 2),
            }
        return out

    result = {"rows": table.count_rows(), "build_seconds": round(build, 1)}
    result["direct"] = timed(lambda: store.chunks_table(dim))
    if root.startswith("s3://"):
        began = time.perf_counter()
        replica = store.read_replica()
        result["replica_first_fetch_seconds"] = round(time.perf_counter() - began, 2)
        result["replica"] = timed(lambda: index.open_table(replica, dim))
        # One more write (1k rows), then the replica refreshes incrementally.
        index.upsert_batch(table, batch(rows, 1000, "extra"), "bench", "extra")
        began = time.perf_counter()
        replica = store.read_replica()
        result["replica_refresh_seconds"] = round(time.perf_counter() - began, 2)
        result["replica_rows_after_refresh"] = index.open_table(replica, dim).count_rows()
    return result


def child(argv: list[str]) -> None:
    kind, root = argv[0], argv[1]
    with PeakMemory() as memory:
        if kind == "stage":
            result = stage_child(root, argv[2])
        else:
            result = search_child(root, int(argv[2]), int(argv[3]))
    result["peak_rss_mb"] = round(memory.peak / 2**20, 1)
    print(json.dumps(result))


# --- parent ---------------------------------------------------------------------------------------


def run_child(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400, help="documents in the batch")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the search table")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--name", default="storage")
    args = parser.parse_args()

    from scripts.prod_local import create_database, drop_database
    from tests.s3_server import BUCKET, SeaweedServer

    database = f"llama_bench_{uuid.uuid4().hex[:8]}"
    create_database("127.0.0.1", 5432, "postgres", database)
    server = SeaweedServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
            tmp = Path(tmp)
            corpus = tmp / "corpus"
            make_corpus(args.docs, corpus)
            env = {
                **os.environ,
                **server.env,
                "HF_HUB_OFFLINE": "1",
                "LLAMA_CACHE_DIR": str(tmp / "cache"),
                "LLAMA_DEDUP_INDEX_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
                "PYTHONPATH": str(ROOT),
            }
            roots = {"local": str(tmp / "local"), "s3": f"s3://{BUCKET}/bench-{tmp.name}"}
            stage = {}
            for name in ("local", "s3"):
                stage_env = {
                    **env,
                    "LLAMA_DATA_ROOT": roots[name],
                    "DAGSTER_HOME": str(tmp / f"home-{name}"),
                }
                if name == "local":
                    stage_env.pop("LLAMA_DEDUP_INDEX_URL")  # the embedded SQLite index
                print(f"stage on the {name} root ...", flush=True)
                stage[name] = run_child(["stage", roots[name], str(corpus)], stage_env)
            search = {}
            for name in ("local", "s3"):
                print(f"search on the {name} root ...", flush=True)
                search[name] = run_child(
                    ["search", roots[name] + "-search", str(args.rows), str(args.queries)],
                    {**env, "LLAMA_DATA_ROOT": roots[name], "DAGSTER_HOME": str(tmp / "h")},
                )
    finally:
        server.close()
        drop_database("127.0.0.1", 5432, "postgres", database)

    ratio = stage["s3"]["seconds"] / stage["local"]["seconds"]
    local_p95 = search["local"]["direct"]["vector"]["p95_ms"]
    replica_p95 = search["s3"]["replica"]["vector"]["p95_ms"]
    payload = {
        "conditions": conditions(),
        "docs": args.docs,
        "stage": stage,
        "stage_ratio_s3_over_local": round(ratio, 2),
        "search": search,
        "replica_p95_over_local": round(replica_p95 / local_p95, 2),
    }
    md = [
        "# Storage: an S3 data root against a local one",
        "",
        f"Measured {payload['conditions']['when']} on {payload['conditions']['cpus']} CPUs, "
        f"load average {payload['conditions']['loadavg_1_5_15']} (a shared machine: use as "
        "scale). S3: SeaweedFS `weed mini` on loopback; dedup index of the S3 root in "
        "PostgreSQL, of the local root in SQLite. `python benchmarks/storage.py`.",
        "",
        f"## One batch, data + retrieval stage ({args.docs} documents, every batch asset)",
        "",
        "| root | wall s | landing s | peak RSS MB | rows indexed |",
        "|---|---|---|---|---|",
    ]
    for name in ("local", "s3"):
        s = stage[name]
        md.append(
            f"| {name} | {s['seconds']} | {s['landing_seconds']} | {s['peak_rss_mb']} "
            f"| {s['index_rows']} |"
        )
    md += [
        "",
        f"**S3 / local wall time: {ratio:.2f}** (goal <= 1.5).",
        "",
        "| step | local s | S3 s |",
        "|---|---|---|",
    ]
    for step in stage["local"]["steps"]:
        md.append(
            f"| {step} | {stage['local']['steps'][step]} | {stage['s3']['steps'].get(step)} |"
        )
    md += [
        "",
        f"## Search on a chunks table of {search['local']['rows']:,} rows ({args.queries} "
        "queries, k=10, ANN index as rag_index builds it)",
        "",
        "| table | vector p50 ms | vector p95 ms | hybrid p50 ms | hybrid p95 ms |",
        "|---|---|---|---|---|",
    ]
    for label, figures in (
        ("local", search["local"]["direct"]),
        ("S3, read directly", search["s3"]["direct"]),
        ("S3, local read replica", search["s3"]["replica"]),
    ):
        md.append(
            f"| {label} | {figures['vector']['p50_ms']} | {figures['vector']['p95_ms']} | "
            f"{figures['hybrid']['p50_ms']} | {figures['hybrid']['p95_ms']} |"
        )
    s3 = search["s3"]
    md += [
        "",
        f"**Replica p95 / local p95 (vector): {payload['replica_p95_over_local']:.2f}** "
        "(goal <= 2). The replica's first fetch took "
        f"{s3['replica_first_fetch_seconds']} s; after one more write of 1,000 rows its "
        f"refresh took {s3['replica_refresh_seconds']} s (it downloads only new files; "
        f"{s3['replica_rows_after_refresh']:,} rows after). Peak RSS: local "
        f"{search['local']['peak_rss_mb']} MB, S3 {s3['peak_rss_mb']} MB (building the "
        "table included).",
        "",
    ]
    write_results(args.name, payload, "\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
