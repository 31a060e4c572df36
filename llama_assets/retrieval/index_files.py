"""Checksums of the ``chunks`` table's files: a damaged fragment is found, not served.

LanceDB reads a truncated or deleted fragment with an error, but a flipped byte
inside a vector or an offset can read back as a wrong value without one. Lance
files are immutable once written (every write adds files and a new version),
so the size and sha256 of each file are recorded after every write
(`record_checksums`, which hashes only the files it has not seen) in
``<lancedb>/chunks.checksums.json``, and `verify_checksums` compares them. The
owner of the table is ``rag_index``: its run verifies first and, on a problem,
moves the damaged table aside and rebuilds it from every batch's checksummed
chunks and embeddings (its upstream).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.atomic import atomic_write_json, sha256_file

TABLE_DIR = "chunks.lance"
CHECKSUMS = "chunks.checksums.json"
CONTENT_DIRS = ("data", "_deletions", "_indices")
"""The table's content: fragments, deletion files, index files, each written once
(version manifests and Lance's latest-version hint are rewritten and rebuilt)."""


def _files(table_dir: Path) -> dict[str, int]:
    return {
        path.relative_to(table_dir).as_posix(): path.stat().st_size
        for folder in CONTENT_DIRS
        for path in sorted((table_dir / folder).rglob("*"))
        if path.is_file()
    }


def record_checksums(uri: Path | str) -> dict[str, dict]:
    """Record every file of the table (new ones hashed; vanished ones dropped,
    as after ``optimize``'s cleanup). Call after each write."""
    uri = Path(uri)
    table_dir = uri / TABLE_DIR
    recorded = _read(uri)
    current = _files(table_dir) if table_dir.is_dir() else {}
    sums = {}
    for name, size in current.items():
        known = recorded.get(name)
        if known is not None and known["bytes"] == size:
            sums[name] = known
        else:
            sums[name] = {"bytes": size, "sha256": sha256_file(table_dir / name)}
    atomic_write_json(uri / CHECKSUMS, sums)
    return sums


def verify_checksums(uri: Path | str, hashes: bool = True) -> list[str]:
    """Problems of the table's files against their record; empty when intact
    (or when nothing was recorded yet). Without `hashes` only presence and sizes
    are checked (a stat per file: cheap enough before every search)."""
    uri = Path(uri)
    table_dir = uri / TABLE_DIR
    problems = []
    for name, known in _read(uri).items():
        path = table_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != known["bytes"]:
            problems.append(f"{name}: size {path.stat().st_size} != {known['bytes']} recorded")
        elif hashes and sha256_file(path) != known["sha256"]:
            problems.append(f"{name}: sha256 mismatch")
    return problems


def set_aside(uri: Path | str) -> Path:
    """Move the damaged table (and its record) aside as ``chunks.lance.corrupt-<UTC
    time>``, for a person to inspect; LanceDB no longer lists it."""
    uri = Path(uri)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = uri / f"{TABLE_DIR}.corrupt-{stamp}"
    shutil.move(str(uri / TABLE_DIR), str(aside))
    (uri / CHECKSUMS).unlink(missing_ok=True)
    return aside


def _read(uri: Path) -> dict[str, dict]:
    try:
        return json.loads((uri / CHECKSUMS).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}  # a damaged record: re-recorded by the next write
