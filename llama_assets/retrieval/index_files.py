"""Checksums of the ``chunks`` table's files: a damaged fragment is found, not served.

LanceDB reads a truncated or deleted fragment with an error, but a flipped byte
inside a vector or an offset can read back as a wrong value without one. Lance
files are immutable once written (every write adds files and a new version),
so each file is recorded after every write (`record_checksums`) in
``<lancedb>/chunks.checksums.json``, and `verify_checksums` compares. The
record depends on the store (base/store.py):

- local folder: size and sha256 (only files not seen before are hashed);
- S3: size and ETag, from one LIST. The server verified each file's
  checksum when it was written, and an object overwritten with other bytes
  gets another ETag, so verifying is one LIST too: nothing is downloaded.

The owner of the table is ``rag_index``: its run verifies first and, on a
problem, sets the damaged table aside and rebuilds it from every batch's
checksummed chunks and embeddings (its upstream).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.atomic import sha256_file
from llama_assets.base.store import (
    Location,
    ObjectInfo,
    PreconditionFailed,
    as_location,
    publish_manifest,
)

TABLE_DIR = "chunks.lance"
CHECKSUMS = "chunks.checksums.json"
CONTENT_DIRS = ("data", "_deletions", "_indices")
"""The table's content: fragments, deletion files, index files, each written once
(version manifests and Lance's latest-version hint are rewritten and rebuilt)."""
RECORD_ATTEMPTS = 5
"""Writers racing on the record each re-list and retry (compare-and-swap)."""


def _files(table: Location) -> dict[str, ObjectInfo]:
    return {o.key: o for o in table.files() if o.key.split("/", 1)[0] in CONTENT_DIRS}


def _entry(table: Location, obj: ObjectInfo) -> dict:
    if table.is_local:
        return {"bytes": obj.size, "sha256": sha256_file(table.local / obj.key)}
    return {"bytes": obj.size, "etag": obj.etag}


def record_checksums(db: Location | Path | str) -> dict[str, dict]:
    """Record every file of the table under the LanceDB folder `db` (new ones
    hashed on the local store; vanished ones dropped, as after ``optimize``'s
    cleanup). Call after each write."""
    db = as_location(db)
    table, target = db / TABLE_DIR, db / CHECKSUMS
    kind = "sha256" if db.is_local else "etag"
    attempts = RECORD_ATTEMPTS
    while True:
        recorded, etag = _read(target)
        sums = {}
        for name, obj in _files(table).items():
            known = recorded.get(name)
            # A known file keeps its record, so a damaged one stays found.
            ok = known is not None and known["bytes"] == obj.size and kind in known
            sums[name] = known if ok else _entry(table, obj)
        try:
            publish_manifest(target, sums, expected_etag=etag)
            return sums
        except PreconditionFailed:
            # Another writer recorded since the read: list again, after its write.
            attempts -= 1
            if not attempts:
                raise


def verify_checksums(db: Location | Path | str, hashes: bool = True) -> list[str]:
    """Problems of the table's files against their record; empty when intact
    (or when nothing was recorded yet). One listing; on the local store,
    without `hashes` only presence and sizes are checked (cheap enough before
    every search), while on S3 the ETags always are (they come with the LIST)."""
    db = as_location(db)
    table = db / TABLE_DIR
    recorded, _ = _read(db / CHECKSUMS)
    if not recorded:
        return []
    current = _files(table)
    problems = []
    for name, known in recorded.items():
        obj = current.get(name)
        if obj is None:
            problems.append(f"{name}: missing")
        elif obj.size != known["bytes"]:
            problems.append(f"{name}: size {obj.size} != {known['bytes']} recorded")
        elif kind := _changed(table, obj, known, hashes):
            problems.append(f"{name}: {kind} mismatch")
    return problems


def _changed(table: Location, obj: ObjectInfo, known: dict, hashes: bool) -> str | None:
    """Which recorded checksum the file no longer matches, if any."""
    local = table.local
    if local is None:
        return "etag" if "etag" in known and obj.etag != known["etag"] else None
    if hashes and "sha256" in known and sha256_file(local / obj.key) != known["sha256"]:
        return "sha256"
    return None


def set_aside(db: Location | Path | str) -> Location:
    """Move the damaged table aside as ``chunks.lance.corrupt-<UTC time>`` and drop
    its record, for a person to inspect; LanceDB no longer lists it, and a new
    ``chunks`` table can be created in its place. On S3 (no rename) its objects
    are copied, then deleted: interrupted, the table left behind still fails
    verification and is set aside again on the next run."""
    db = as_location(db)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    table, aside = db / TABLE_DIR, db / f"{TABLE_DIR}.corrupt-{stamp}"
    if db.is_local:
        if table.local.exists():
            table.local.rename(aside.local)
    else:
        objects = table.files()
        for obj in objects:
            db.store.copy((table / obj.key).key, (aside / obj.key).key)
        # Content before the version manifests: a table left half-deleted still
        # fails verification rather than looking empty.
        objects.sort(key=lambda o: o.key.startswith("_versions/"))
        db.store.delete((table / o.key).key for o in objects)
    (db / CHECKSUMS).unlink()
    return aside


def _read(target: Location) -> tuple[dict[str, dict], str | None]:
    """The record and its etag (None when there is none)."""
    try:
        data, etag = target.store.get_with_etag(target.key)
    except FileNotFoundError:
        return {}, None
    try:
        return json.loads(data), etag
    except ValueError:
        return {}, etag  # a damaged record: re-recorded by the next write
