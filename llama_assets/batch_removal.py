"""Removing a landing batch everywhere: what it would change, then doing it.

A batch lives in several places: its partition in the instance, its rows in
the ``chunks`` table, its landing folder (or the landing-zone sensor would
register it again) and every file derived from it. `plan_removal` lists them
without changing anything, so the CLI can show the plan and ask first;
`apply_removal` carries the plan out.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from llama_assets.base.layout import DataLayout, split_batch_key
from llama_assets.partitions import BATCHES
from llama_assets.retrieval.index import (
    TABLE_NAME,
    batch_filter,
    delete_batch,
    maintain_indexes,
)


@dataclass
class BatchRemoval:
    key: str
    registered: bool
    """Whether the batch is a partition of the instance."""
    index_rows: int
    """Rows of the batch in the ``chunks`` table."""
    paths: list[Path] = field(default_factory=list)
    """Existing files and folders of the batch (landing folder and derived files)."""

    @property
    def empty(self) -> bool:
        return not (self.registered or self.index_rows or self.paths)

    def describe(self) -> list[str]:
        lines = [
            f"partition {self.key}: " + ("delete" if self.registered else "not registered"),
            f"chunks table: delete {self.index_rows} row(s)",
            f"{len(self.paths)} path(s) to delete:",
        ]
        return lines + [f"  {path}" for path in self.paths]


def batch_paths(layout: DataLayout, key: str) -> list[Path]:
    """Every place a batch's files can be, existing or not."""
    source, batch = split_batch_key(key)
    return [
        layout.landing_batch(key),
        layout.shards(key),
        layout.quarantine(key),
        layout.profile(key),
        layout.embedding_summary(key),
        layout.embedding_summary(key).with_suffix(".json"),
        layout.review_queue(key),
        *sorted((layout.root / "staging").glob(f"*/{source}/{batch}")),
    ]


def plan_removal(instance: dg.DagsterInstance, layout: DataLayout, db, key: str) -> BatchRemoval:
    """What removing batch `key` would change (changes nothing). `db` is the
    LanceDB connection that holds the ``chunks`` table."""
    source, batch = split_batch_key(key)
    rows = 0
    if TABLE_NAME in db.table_names():
        rows = db.open_table(TABLE_NAME).count_rows(filter=batch_filter(source, batch))
    return BatchRemoval(
        key=key,
        registered=key in instance.get_dynamic_partitions(BATCHES),
        index_rows=rows,
        paths=[path for path in batch_paths(layout, key) if path.exists()],
    )


def apply_removal(instance: dg.DagsterInstance, db, removal: BatchRemoval) -> int:
    """Carry out `removal`; returns the index rows deleted. The index goes first
    (one LanceDB commit), then the files, then the partition, so a crash part
    way leaves a batch that `plan_removal` still finds and a rerun finishes."""
    source, batch = split_batch_key(removal.key)
    deleted = 0
    if removal.index_rows:
        table = db.open_table(TABLE_NAME)
        deleted = delete_batch(table, source, batch)
        maintain_indexes(table)
    for path in removal.paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if removal.registered:
        instance.delete_dynamic_partition(BATCHES, removal.key)
    return deleted
