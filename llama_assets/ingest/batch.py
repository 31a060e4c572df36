"""Layer 1 over a landing batch: read every file, check every record's schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llama_assets.curate.rejects import Reject
from llama_assets.ingest.readers import Document, iter_batch
from llama_assets.ingest.schema import RawDocuments, documents_frame, split_schema_failures


@dataclass
class LoadedBatch:
    documents: pl.DataFrame
    rejects: list[Reject]
    files: int


def load_batch(batch_dir: Path, source: str, batch: str) -> LoadedBatch:
    docs: list[Document] = []
    rejects: list[Reject] = []
    for item in iter_batch(batch_dir, source, batch):
        (docs if isinstance(item, Document) else rejects).append(item)
    frame, schema_rejects = split_schema_failures(documents_frame(docs), RawDocuments)
    files = sum(1 for p in batch_dir.rglob("*") if p.is_file())
    return LoadedBatch(frame, rejects + schema_rejects, files)
