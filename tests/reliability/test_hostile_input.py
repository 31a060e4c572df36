"""Hostile input: every bad file of a batch is quarantined with a reason, the
rest of the batch is kept, memory stays bounded and nothing is written outside
the data root.

The memory bound (llama_assets/ingest/readers/base.py): a line- or row-based
record is held only up to MAX_RECORD_BYTES (16 MiB; longer ones are read past
in 1 MiB pieces), a whole-file format up to MAX_FILE_BYTES (64 MiB), Parquet
about BATCH_BYTES (64 MiB) of rows at a time; a compressed file stops at
MAX_COMPRESSION_RATIO (200:1, checked past 64 MiB out) or MAX_DECOMPRESSED_BYTES.
`test_reading_a_bomb_and_a_huge_line_keeps_memory_bounded` measures the peak
RSS of a process reading the largest of these inputs and prints it.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from llama_assets.base.rejects import Reject
from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.readers import Document, iter_batch
from llama_assets.ingest.readers.base import MAX_RECORD_BYTES
from llama_assets.partitions import BATCHES
from llama_assets.tables import read_table
from tests.landing import jsonl, land, read_jsonl, topic

MIB = 1024 * 1024


def results(batch_dir: Path) -> tuple[dict, dict]:
    """{(path, record): text} of the documents, {(path, record): reason} of the rejects."""
    items = list(iter_batch(batch_dir, "web", "b1", spool_dir=batch_dir.parent / "spool"))
    docs = {(i.path, i.record): i.text for i in items if isinstance(i, Document)}
    rejects = {(i.path, i.record): i.reason for i in items if isinstance(i, Reject)}
    return docs, rejects


def repeated_gzip(piece: bytes, times: int) -> bytes:
    """A gzip stream of `piece` repeated: members concatenated (a valid gzip file)."""
    return gzip.compress(piece, compresslevel=1) * times


def test_a_valid_csv_row_after_an_oversized_field_is_kept(tmp_path):
    batch = tmp_path / "web" / "b1"
    batch.mkdir(parents=True)
    huge = "y" * (MAX_RECORD_BYTES + 10)
    with open(batch / "table.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["title", "text"])
        writer.writerow(["first", "kept before"])
        writer.writerow(["huge unquoted", huge])
        writer.writerow(["after one", "kept after, with a comma"])
        writer.writerow(["huge quoted", f'{huge[:100]}\n"quoted"\n' * (MAX_RECORD_BYTES // 100)])
        writer.writerow(["after two", 'kept "too"\nover two lines'])
        fh.write('stray,a 5" screen\n')  # a quote inside an unquoted field is literal
    docs, rejects = results(batch)
    assert docs == {
        ("table.csv", 0): "kept before",
        ("table.csv", 2): "kept after, with a comma",
        ("table.csv", 4): 'kept "too"\nover two lines',
        ("table.csv", 5): 'a 5" screen',
    }
    assert rejects == {("table.csv", 1): "too_large", ("table.csv", 3): "too_large"}


def deep(depth: int) -> str:
    """JSON text of a value nested `depth` lists deep (written as text: encoding it
    with json.dumps would recurse, and a pytest-xdist worker runs tests deeper)."""
    return "[" * depth + '"x"' + "]" * depth


def test_deep_json_wrong_parquet_schemas_and_odd_file_names_spare_the_rest(tmp_path):
    batch = tmp_path / "web" / "b1"
    batch.mkdir(parents=True)
    (batch / "nested.jsonl").write_text(
        jsonl(
            "[" * 200_000 + "]" * 200_000,
            '{"text": ' + "[" * 100_000,
            '{"text": "kept beside a deep field", "meta": ' + deep(900) + "}",
            '{"meta": ' + deep(950) + "}",  # no text: its excerpt must not recurse either
        )
    )
    (batch / "nested.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    pq.write_table(pa.table({"text": [1, 2]}), batch / "int_text.parquet")
    pq.write_table(pa.table({"text": [["a", "b"]]}), batch / "list_text.parquet")
    pq.write_table(pa.table({"body_html": ["<p>x</p>"]}), batch / "no_text.parquet")
    pq.write_table(pa.table({"text": [b"raw bytes"]}), batch / "binary_text.parquet")
    pq.write_table(pa.table({"text": ["parquet kept"]}), batch / "good.parquet")
    odd = ["new\nline.txt", "carriage\rreturn.md", "tab\there.txt", "quote'\"s.txt", "-rf.txt"]
    for name in odd:
        (batch / name).write_text(f"text of {name!r}")
    docs, rejects = results(batch)
    assert docs == {
        ("nested.jsonl", 2): "kept beside a deep field",
        ("good.parquet", 0): "parquet kept",
        **{(name, 0): f"text of {name!r}" for name in odd},
    }
    assert rejects == {
        ("nested.jsonl", 0): "invalid_json",
        ("nested.jsonl", 1): "invalid_json",
        ("nested.jsonl", 3): "missing_text",
        ("nested.json", None): "invalid_json",
        ("int_text.parquet", 0): "wrong_type",
        ("int_text.parquet", 1): "wrong_type",
        ("list_text.parquet", 0): "wrong_type",
        ("no_text.parquet", None): "missing_text",
        ("binary_text.parquet", 0): "wrong_type",
    }
    # The same from 400 frames deeper (a Dagster step reads deeper than `ingest`):
    # what is kept does not depend on the caller's stack.
    assert at_depth(400, lambda: results(batch)) == (docs, rejects)


def at_depth(frames: int, fn):
    return fn() if frames == 0 else at_depth(frames - 1, fn)


READ_AND_MEASURE = """
import json, resource, sys
from pathlib import Path
from llama_assets.ingest.batch import stream_batch

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def read(name):
    rows = []
    loaded = stream_batch(Path(sys.argv[1]) / name, "web", name, lambda f: rows.append(f.height),
                          spool_dir=Path(sys.argv[2]))
    return sum(rows), sorted((r.path, r.record, r.reason) for r in loaded.rejects)

warm = read("warm")
before = peak_mb()
hostile = read("hostile")
print(json.dumps({"warm": warm, "hostile": hostile, "before_mb": before, "after_mb": peak_mb()}))
"""


def test_reading_a_bomb_and_a_huge_line_keeps_memory_bounded(tmp_path):
    """A 256 MiB line and gzip/zstd bombs of 1 GiB (and a compressed Parquet
    that would spool 1 GiB) next to good files: in a fresh process, the peak RSS
    grows by far less than the inputs, and nothing lands in the system temp
    folder (TMPDIR points at an empty folder that must stay empty)."""
    root = tmp_path / "data"
    source = root / "landing" / "web"
    warm, hostile = source / "warm", source / "hostile"
    warm.mkdir(parents=True)
    hostile.mkdir(parents=True)
    (warm / "a.jsonl").write_text(jsonl({"text": "warm up"}))
    with open(hostile / "huge_line.jsonl", "wb") as fh:
        fh.write(b'{"text": "')
        block = b"z" * MIB
        for _ in range(256):
            fh.write(block)
        fh.write(b'"}\n' + jsonl({"text": "after the huge line"}).encode())
    piece = b"a" * (16 * MIB)
    (hostile / "bomb.jsonl.gz").write_bytes(repeated_gzip(piece, 64))
    (hostile / "bomb.txt.gz").write_bytes(repeated_gzip(piece, 64))
    (hostile / "bomb.parquet.gz").write_bytes(repeated_gzip(piece, 64))
    (hostile / "bomb.csv.gz").write_bytes(repeated_gzip(b"text\n" + b'"' + piece, 1) * 64)
    zstd_frame = pa.compress(piece, codec="zstd", asbytes=True)
    (hostile / "bomb.jsonl.zst").write_bytes(zstd_frame * 64)
    (hostile / "good.jsonl.gz").write_bytes(gzip.compress(jsonl({"text": "good"}).encode()))
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    spool = root / "tmp"
    env = {**os.environ, "TMPDIR": str(system_tmp), "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", READ_AND_MEASURE, str(source), str(spool)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    rows, rejects = out["hostile"]
    assert rows == 2  # "after the huge line" and "good"
    # Each 16 MiB line of the CSV bomb is a record too large; past 64 MiB out
    # (200:1) the rest of every bomb is one reject.
    assert rejects == [
        ["bomb.csv.gz", 0, "too_large"],
        ["bomb.csv.gz", 1, "too_large"],
        ["bomb.csv.gz", 2, "too_large"],
        ["bomb.csv.gz", 3, "decompression_bomb"],
        ["bomb.jsonl.gz", None, "decompression_bomb"],
        ["bomb.jsonl.zst", None, "decompression_bomb"],
        ["bomb.parquet.gz", None, "decompression_bomb"],
        ["bomb.txt.gz", None, "decompression_bomb"],
        ["huge_line.jsonl", 0, "too_large"],
    ]
    growth = out["after_mb"] - out["before_mb"]
    print(
        f"\npeak RSS reading 256 MiB line + five 1 GiB bombs: {out['after_mb']:.0f} MB "
        f"(+{growth:.0f} MB over the warmed-up reader's {out['before_mb']:.0f} MB)"
    )
    # One record (16 MiB) or one whole file (64 MiB) at a time, plus decoding copies.
    assert growth < 400
    assert list(system_tmp.iterdir()) == []
    assert not spool.exists() or list(spool.rglob("*")) == []


def test_ten_thousand_tiny_files_and_hostile_files_in_one_batch(
    layout, instance, resources, monkeypatch, tmp_path
):
    """raw_documents on one batch of 10,000 one-line files plus hostile ones: every
    tiny file is a document, each hostile file one reject with its reason, the
    quarantine file is valid JSON lines whatever the names held, and no file is
    written to the system temp folder."""
    key = "web/many"
    files: dict[str, str | bytes] = {
        f"d{i // 100:03d}/f{i:05d}.txt": f"tiny {i}" for i in range(10_000)
    }
    files["topic.md"] = topic(0)
    files["line\nbreak.txt"] = topic(1)
    files["bad\nname.jsonl"] = '{"text": "unterminated\n'
    files["bomb.txt.gz"] = repeated_gzip(b"a" * (16 * MIB), 8)
    land(layout, key, files)
    instance.add_dynamic_partitions(BATCHES, [key])
    watched = tmp_path / "system_tmp"
    watched.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    result = dg.materialize(
        [raw_documents],
        instance=instance,
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )
    raw = read_table(layout.staging("raw_documents", key), ["path", "text"])
    assert raw.height == 10_002
    assert raw.filter(pl.col("path") == "line\nbreak.txt")["text"].to_list() == [topic(1)]
    rejects = read_jsonl(layout.quarantine(key) / "raw_documents.jsonl")
    assert {(r["path"], r["reason"]) for r in rejects} == {
        ("bad\nname.jsonl", "invalid_json"),
        ("bomb.txt.gz", "decompression_bomb"),
    }
    # 2 rejects of 10,004 records: under the 1% limit.
    assert result.success
    assert list(watched.iterdir()) == []
