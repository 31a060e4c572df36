"""Removing a landing batch everywhere: what it would change, then doing it.

A batch lives in several places: its partition in the instance, its rows in
the ``chunks`` table, its entries in the dedup index, the training snapshot,
its landing folder (or the landing-zone sensor would register it again) and
every file derived from it. `plan_removal` lists them without changing
anything, so the CLI can show the plan and ask first; `apply_removal` carries
the plan out. What cannot be undone by deleting (a model trained on the batch,
documents of later batches dropped as its duplicates) is said, with what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg

from llama_assets.base.layout import DataLayout, split_batch_key
from llama_assets.base.shards import scan_shards
from llama_assets.base.store import Location, read_tree_file
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.jobs import QUIET_RUN_CONFIG
from llama_assets.partitions import BATCHES
from llama_assets.retrieval.index import (
    batch_filter,
    delete_batch,
    existing_table,
    maintain_indexes,
)

KEPT = (
    "kept: the instance's run history of the batch (an audit log of what ran) and the "
    "embedding cache (vectors keyed by text hash, shared by every batch, no text)"
)


@dataclass
class BatchRemoval:
    key: str
    registered: bool
    """Whether the batch is a partition of the instance."""
    index_rows: int
    """Rows of the batch in the ``chunks`` table."""
    paths: list[Location] = field(default_factory=list)
    """Existing files and folders of the batch (landing folder and derived files)."""
    dedup_entries: int = 0
    """Documents of the batch in the dedup index."""
    in_snapshot: bool = False
    """Whether the training snapshot (``datasets/training``) holds the batch."""
    other_batches: list[str] = field(default_factory=list)
    """The registered batches that stay (what the snapshot is rebuilt from)."""
    champions: list[str] = field(default_factory=list)
    """``<variant>/<version>`` champions trained on a snapshot holding the batch."""
    later_duplicates: dict[str, int] = field(default_factory=dict)
    """Later batches and how many of their documents were dropped as copies of this one's."""

    @property
    def empty(self) -> bool:
        return not (
            self.registered
            or self.index_rows
            or self.paths
            or self.dedup_entries
            or self.in_snapshot
        )

    def describe(self) -> list[str]:
        lines = [
            f"partition {self.key}: " + ("delete" if self.registered else "not registered"),
            f"chunks table: delete {self.index_rows} row(s)",
            f"dedup index: forget {self.dedup_entries} document(s)",
        ]
        if self.in_snapshot and self.other_batches:
            lines.append(
                "training snapshot: holds the batch; rebuilt now from the "
                f"{len(self.other_batches)} other batch(es)"
            )
        elif self.in_snapshot:
            lines.append("training snapshot: holds the batch; deleted (no other batch is left)")
        else:
            lines.append("training snapshot: does not hold the batch")
        for champion in self.champions:
            variant = champion.split("/")[0]
            lines.append(
                f"champion {champion}: trained on a snapshot holding the batch; a model cannot "
                "forget data, so it stays champion until `llama-platform run` retrains on the "
                "rebuilt snapshot and the new model passes the gate (or `llama-platform "
                f"rollback --variant {variant}` now)"
            )
        if self.later_duplicates:
            keys = ",".join(self.later_duplicates)
            counts = ", ".join(f"{k} {n}" for k, n in self.later_duplicates.items())
            lines.append(
                f"later batches lost documents as duplicates of this batch ({counts}); they "
                "come back when those batches are deduplicated again: "
                f"llama-platform backfill --partitions {keys}"
            )
        lines.append(KEPT)
        lines.append(f"{len(self.paths)} path(s) to delete:")
        return lines + [f"  {path}" for path in self.paths]


def batch_paths(layout: DataLayout, key: str) -> list[Location]:
    """Every place a batch's files can be, existing or not."""
    source, batch = split_batch_key(key)
    return [
        layout.landing_batch(key),
        layout.shards(key),
        layout.quarantine(key),
        layout.profile(key),
        layout.embedding_summary(key),
        layout.embedding_drift(key),
        layout.review_queue(key),
        *(stage / source / batch for stage in (layout.root / "staging").subdirs()),
    ]


def snapshot_batches(layout: DataLayout, data_version: str | None = None) -> set[str] | None:
    """The batches the training snapshot `data_version` (default: the current one)
    was built from; None when that is not known."""
    current = layout.training_dataset / "dataset.json"
    paths = [current]
    if data_version:
        paths.insert(0, layout.training_dataset / "versions" / f"{data_version}.json")
    for path in paths:
        try:
            dataset = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data_version is None or dataset.get("data_version") == data_version:
            return set(dataset.get("shard_sets", {}))
    return None


def champions_trained_on(layout: DataLayout, key: str) -> list[str]:
    """``<variant>/<version>`` of each champion whose training snapshot held `key`
    (or whose snapshot is not known any more: it may have)."""
    found = []
    for variant in (layout.root / "models").subdirs():
        aliases = variant / "aliases.json"
        try:
            champion = json.loads(aliases.read_text()).get("champion")
            state = json.loads(read_tree_file(variant / str(champion), "trainer_state.json"))
        except (OSError, ValueError):
            continue
        batches = snapshot_batches(layout, state.get("data_version"))
        if batches is None or key in batches:
            found.append(f"{aliases.parent.name}/{champion}")
    return found


def later_duplicates(layout: DataLayout, key: str, later: list[str]) -> dict[str, int]:
    """Later batches whose clean_shards dropped documents as copies of `key`'s."""
    try:
        ids = set(_shard_doc_ids(layout.shards(key)))
    except (OSError, ValueError, KeyError):
        return {}
    found: dict[str, int] = {}
    for other in later:
        path = layout.quarantine(other) / "clean_shards.jsonl"
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        hits = sum(1 for line in lines if line.strip() and _duplicate_of(json.loads(line)) in ids)
        if hits:
            found[other] = hits
    return found


def _shard_doc_ids(shard_dir: Location) -> list[str]:
    return scan_shards(shard_dir, verify=False).select("doc_id").collect()["doc_id"].to_list()


def _duplicate_of(reject: dict) -> str | None:
    """The surviving document a removed duplicate was a copy of (its reason is
    ``<kind>:<duplicate_of>:cluster=<id>``)."""
    parts = str(reject.get("reason", "")).split(":")
    return parts[1] if len(parts) >= 2 else None


def plan_removal(
    instance: dg.DagsterInstance,
    layout: DataLayout,
    db,
    key: str,
    dedup: DedupIndex | None = None,
) -> BatchRemoval:
    """What removing batch `key` would change (changes nothing). `db` is the
    LanceDB connection that holds the ``chunks`` table, `dedup` the dedup index
    (the data root's, `DataRoot.dedup_index`; by default the local SQLite file
    when there is one)."""
    source, batch = split_batch_key(key)
    table = existing_table(db)
    rows = table.count_rows(filter=batch_filter(source, batch)) if table is not None else 0
    registered = list(instance.get_dynamic_partitions(BATCHES))
    entries = 0
    if dedup is None and layout.dedup_index.is_file():
        dedup = DedupIndex(layout.dedup_index.local)
    if dedup is not None:
        entries = dedup.batch_counts().get(key, 0)
    snapshot = snapshot_batches(layout) or set()
    later = registered[registered.index(key) + 1 :] if key in registered else []
    return BatchRemoval(
        key=key,
        registered=key in registered,
        index_rows=rows,
        paths=[path for path in batch_paths(layout, key) if path.exists()],
        dedup_entries=entries,
        in_snapshot=key in snapshot,
        other_batches=[k for k in registered if k != key],
        champions=champions_trained_on(layout, key),
        later_duplicates=later_duplicates(layout, key, later),
    )


def apply_removal(
    instance: dg.DagsterInstance,
    db,
    removal: BatchRemoval,
    layout: DataLayout,
    resources: dict,
) -> int:
    """Carry out `removal`; returns the index rows deleted.

    In an order that a crash part way through cannot hide: the index rows (one
    LanceDB commit, none when the batch has no rows), the dedup entries, the
    files, the training snapshot (rebuilt by running ``training_dataset``, which
    makes every variant's fine-tune stale, so the next ``run`` retrains), and the
    partition last: until then `plan_removal` still finds the batch and a rerun
    finishes the job.
    """
    source, batch = split_batch_key(removal.key)
    deleted = 0
    if removal.index_rows:
        table = existing_table(db)
        deleted = delete_batch(table, source, batch)
        maintain_indexes(table)
    if removal.dedup_entries:
        # A corrupt index fails here; clean_shards sets it aside and rebuilds it.
        resources["storage"].dedup_index(instance).forget_batch(removal.key)
    for path in removal.paths:
        path.remove()
    if removal.in_snapshot:
        rebuild_snapshot(instance, layout, resources)
    if removal.registered:
        instance.delete_dynamic_partition(BATCHES, removal.key)
    return deleted


def rebuild_snapshot(instance: dg.DagsterInstance, layout: DataLayout, resources) -> None:
    """The training snapshot without the removed batch (whose shards are gone):
    re-materialised from the batches left, or deleted when none is left."""
    from llama_assets.training.assets import training_dataset

    left = [
        k
        for k in instance.get_dynamic_partitions(BATCHES)
        if (layout.shards(k) / "manifest.json").is_file()
    ]
    if not left:
        layout.training_dataset.rmtree()
        return
    result = dg.materialize(
        [training_dataset], instance=instance, resources=resources,
        run_config=QUIET_RUN_CONFIG, raise_on_error=False,
    )  # fmt: skip
    if not result.success:
        raise RuntimeError(
            "the batch is removed, but rebuilding the training snapshot failed: run "
            "`llama-platform run` to rebuild it before training again"
        )
