"""The landing zone: ``<root>/landing/<source>/<batch>/``, one folder a batch.

Files are copied into a hidden temporary folder and renamed into place, so the
sensor (which ignores hidden folders) never sees a half-copied batch.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.atomic import staged_dir
from llama_assets.base.layout import batch_key, check_segment


def landing_batch_keys(landing: Path) -> list[str]:
    """Every complete batch, in arrival order (batch name, then source)."""
    if not landing.is_dir():
        return []
    found = [
        (batch.name, source.name)
        for source in landing.iterdir()
        if source.is_dir() and not source.name.startswith(".")
        for batch in source.iterdir()
        if batch.is_dir() and not batch.name.startswith(".")
    ]
    return [batch_key(source, batch) for batch, source in sorted(found)]


def new_batch_name() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def add_to_landing(path: Path, landing: Path, source: str, batch: str | None = None) -> str:
    """Copy a file or folder into the landing zone as a new batch; returns its key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    batch = check_segment(batch or new_batch_name(), "batch")
    final = landing / check_segment(source, "source") / batch
    if final.exists():
        raise FileExistsError(f"batch {source}/{batch} is already in the landing zone: {final}")
    with staged_dir(final) as staged:
        if path.is_dir():
            shutil.copytree(path, staged, dirs_exist_ok=True)
        else:
            shutil.copy2(path, staged / path.name)
    return batch_key(source, batch)
