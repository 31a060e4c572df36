"""Layer 1 over a landing batch: read every file, check every record's schema.

The batch is streamed: documents are gathered into parts (the source's
`part_rows`, 10,000 by default), each part is schema-checked and handed to a
sink (the shard writer) before the next is read, so memory is bounded by one
part however large the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from llama_assets.base.rejects import Reject
from llama_assets.base.shards import DEFAULT_MAX_ROWS
from llama_assets.ingest.readers import Document, iter_batch
from llama_assets.ingest.schema import RawDocuments, documents_frame, split_schema_failures


@dataclass
class LoadedBatch:
    rows: int = 0
    rejects: list[Reject] = field(default_factory=list)
    files: int = 0
    parts: int = 0


def stream_batch(
    batch_dir: Path,
    source: str,
    batch: str,
    sink: Callable[[pl.DataFrame], None],
    part_rows: int = DEFAULT_MAX_ROWS,
    spool_dir: Path | None = None,
    on_part: Callable[[LoadedBatch], None] | None = None,
) -> LoadedBatch:
    """Read a landing batch part by part; `sink` receives each schema-checked part,
    then `on_part` the counts so far (progress of a large batch). `spool_dir`:
    where compressed files that must be seekable are spooled."""
    loaded = LoadedBatch()
    docs: list[Document] = []

    def flush() -> None:
        frame, schema_rejects = split_schema_failures(documents_frame(docs), RawDocuments)
        docs.clear()
        loaded.rejects.extend(schema_rejects)
        loaded.rows += frame.height
        loaded.parts += 1
        sink(frame)
        if on_part is not None:
            on_part(loaded)

    for item in iter_batch(batch_dir, source, batch, spool_dir):
        if isinstance(item, Document):
            docs.append(item)
            if len(docs) >= part_rows:
                flush()
        else:
            loaded.rejects.append(item)
    if docs or loaded.parts == 0:
        flush()
    loaded.files = sum(1 for p in Path(batch_dir).rglob("*") if p.is_file())
    return loaded
