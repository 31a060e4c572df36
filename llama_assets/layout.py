"""The artifact layout under the data root: the path contract users rely on.

Every path an asset reads or writes comes from here, so the layout documented
in the README and ``docs/architecture.md`` exists in exactly one place. Batch
artifacts are always scoped by ``<source>/<batch>`` so partitions never
overwrite each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# A source or batch name is one path segment of safe characters; the
# partition key joins them as ``<source>/<batch>``.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value) or ".." in value:
        raise ValueError(
            f"invalid {what} name {value!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (at most 128 characters)"
        )
    return value


def batch_key(source: str, batch: str) -> str:
    return f"{check_segment(source, 'source')}/{check_segment(batch, 'batch')}"


def split_batch_key(key: str) -> tuple[str, str]:
    source, sep, batch = key.partition("/")
    if not sep:
        raise ValueError(f"batch partition key {key!r} is not of the form <source>/<batch>")
    return check_segment(source, "source"), check_segment(batch, "batch")


@dataclass(frozen=True)
class DataLayout:
    root: Path

    # landing zone -----------------------------------------------------------
    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def landing_batch(self, key: str) -> Path:
        source, batch = split_batch_key(key)
        return self.landing / source / batch

    # per-batch stages ---------------------------------------------------------
    def staging(self, stage: str, key: str) -> Path:
        """Intermediate per-batch tables: ``staging/<stage>/<source>/<batch>/``."""
        source, batch = split_batch_key(key)
        return self.root / "staging" / stage / source / batch

    def quarantine(self, key: str) -> Path:
        source, batch = split_batch_key(key)
        return self.root / "quarantine" / source / batch

    def profile(self, key: str) -> Path:
        source, batch = split_batch_key(key)
        return self.root / "profiles" / source / f"{batch}.json"

    def shards(self, key: str) -> Path:
        source, batch = split_batch_key(key)
        return self.root / "shards" / source / batch

    @property
    def shards_root(self) -> Path:
        return self.root / "shards"

    # shared stores -------------------------------------------------------------
    @property
    def lancedb(self) -> Path:
        return self.root / "lancedb"

    @property
    def training_dataset(self) -> Path:
        return self.root / "datasets" / "training"

    def models(self, variant: str, version: str | None = None) -> Path:
        base = self.root / "models" / variant
        return base / version if version else base

    def aliases(self, variant: str) -> Path:
        return self.models(variant) / "aliases.json"

    def reports(self, variant: str, version: str | None = None) -> Path:
        base = self.root / "reports" / variant
        return base / version if version else base
