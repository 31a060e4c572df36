"""Instruction (SFT) records, zstd files, the streamed shard writer."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from llama_assets.base.shards import ShardWriter, iter_shards, write_shards
from llama_assets.curate.validate import ContentPolicy, validate_documents
from llama_assets.ingest.batch import stream_batch
from llama_assets.ingest.readers import Document, iter_batch
from tests.landing import topic


def _read(tmp_path, files: dict[str, str | bytes]):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return list(iter_batch(tmp_path, "src", "b1"))


def test_instruction_records_become_messages(tmp_path) -> None:
    records = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."},
            ]
        },
        {"prompt": "Say A.", "response": "A."},
        {"instruction": "Add.", "input": "1 and 2", "output": "3"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"prompt": "no response"},
        {"text": "plain document"},
    ]
    items = _read(tmp_path, {"r.jsonl": "\n".join(json.dumps(r) for r in records)})
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if not isinstance(i, Document)]
    assert [d.text for d in docs] == [
        "Be brief.\n\nHi?\n\nHello.",
        "Say A.\n\nA.",
        "Add.\n\n1 and 2\n\n3",
        "plain document",
    ]
    assert json.loads(docs[1].messages) == [
        {"role": "user", "content": "Say A."},
        {"role": "assistant", "content": "A."},
    ]
    assert json.loads(docs[2].messages)[0] == {"role": "user", "content": "Add.\n\n1 and 2"}
    assert docs[3].messages is None
    assert [(r.record, r.reason) for r in rejects] == [
        (3, "invalid_messages"),
        (4, "invalid_messages"),
    ]


def test_pii_is_masked_in_every_message(tmp_path) -> None:
    answer = topic(1) + " Write to jane.doe@example.org for help."
    record = {"prompt": topic(0), "response": answer}
    sink: list[pl.DataFrame] = []
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "r.jsonl").write_text(json.dumps(record))
    stream_batch(tmp_path / "b", "src", "b1", sink.append)
    outcome = validate_documents(sink[0], ContentPolicy())
    (row,) = outcome.kept.iter_rows(named=True)
    assert "jane.doe@example.org" not in row["text"]
    assert "jane.doe@example.org" not in row["messages"]
    assert {k: v for k, v in outcome.pii_counts.items() if v} == {"email": 1}
    assert json.loads(row["messages"])[1]["content"].endswith("for help.")


def test_zstd_files_are_read(tmp_path) -> None:
    body = b'{"text": "first"}\n{"text": "second"}\n'
    items = _read(
        tmp_path,
        {
            "a.jsonl.zst": pa.compress(body, codec="zstd", asbytes=True),
            "b.txt.zstd": pa.compress(b"a zstd note", codec="zstd", asbytes=True),
            "c.jsonl.zst": b"not zstd at all",
        },
    )
    assert [i.text for i in items if isinstance(i, Document)] == ["first", "second", "a zstd note"]
    assert [i.reason for i in items if not isinstance(i, Document)] == ["unreadable_file"]


def test_streamed_parts_bound_memory_and_match_write_shards(tmp_path) -> None:
    for i in range(25):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i:02d}.txt").write_text(f"document number {i}")
    sizes: list[int] = []
    with ShardWriter(tmp_path / "out", max_rows=10) as writer:

        def sink(frame: pl.DataFrame) -> None:
            sizes.append(frame.height)
            writer.write(frame)

        loaded = stream_batch(tmp_path / "in", "src", "b1", sink, part_rows=4)
    assert loaded.rows == 25 and max(sizes) == 4 and loaded.parts == 7
    assert [s["rows"] for s in writer.manifest["shards"]] == [10, 10, 5]
    whole = pl.concat(list(iter_shards(tmp_path / "out")))
    reference = write_shards(whole, tmp_path / "ref", max_rows=10)
    assert [s["sha256"] for s in reference["shards"]] == [
        s["sha256"] for s in writer.manifest["shards"]
    ]


def test_iter_shards_detects_a_truncated_part(tmp_path) -> None:
    manifest = write_shards(pl.DataFrame({"a": list(range(30))}), tmp_path / "t", max_rows=10)
    part = tmp_path / "t" / manifest["shards"][1]["file"]
    part.write_bytes(part.read_bytes()[:-20])
    with pytest.raises(RuntimeError, match="part-00001"):
        list(iter_shards(tmp_path / "t"))
