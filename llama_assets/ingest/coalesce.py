"""Micro-batch coalescing and landing-zone reconciliation (pure, Dagster-free).

Streaming producers drop a small batch into the landing zone every few seconds.
One Dagster run per batch costs about 4 s of overhead each, so small batches
of one source that arrive close together are merged into one landing batch
(their folders moved, whole, into ``<source>/<first batch>-c<N>/``) and ingested
by one run. The merged batch is an ordinary batch folder with nested folders,
so every stage, the "earlier batches" order of dedup and drift, and the
partition key contract stay as they are; the member names survive as the
first path segment of every document's ``path``.

Reconciliation compares the landing zone with what was ingested: every batch
folder with the fingerprint (files, bytes, content digest of names, sizes and
mtimes) recorded by its ``raw_documents`` materialisation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from llama_assets.base.layout import batch_key, split_batch_key
from llama_assets.base.store import Location, as_location

LANDING_FINGERPRINT = "landing_fingerprint"
"""raw_documents metadata key: the fingerprint of the landing folder it read."""


@dataclass(frozen=True)
class CoalesceSettings:
    """When small batches are merged.

    ``window_seconds``: a source's small batches are held until none has
    arrived for this long (a burst is ingested as one batch). ``max_wait_seconds``:
    the oldest held batch waits at most this long, so a steady trickle still
    flows. ``max_bytes``: a batch larger than this is not "micro" and gets its
    own run at once. ``window_seconds=0`` turns coalescing off.
    """

    window_seconds: float = 10.0
    max_wait_seconds: float = 60.0
    max_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CoalesceSettings:
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            window_seconds=float(env.get("LLAMA_COALESCE_WINDOW_SECONDS", default.window_seconds)),
            max_wait_seconds=float(
                env.get("LLAMA_COALESCE_MAX_WAIT_SECONDS", default.max_wait_seconds)
            ),
            max_bytes=int(env.get("LLAMA_MICRO_BATCH_MAX_BYTES", default.max_bytes)),
        )


@dataclass(frozen=True)
class LandingBatch:
    key: str
    path: Location
    files: int
    bytes: int
    arrived: float  # mtime of the batch folder: when its last entry landed


@dataclass(frozen=True)
class Fingerprint:
    files: int
    bytes: int
    digest: str


def landing_fingerprint(folder: Location | Path) -> Fingerprint:
    """Files, bytes and a digest of (relative path, size, mtime) of every file.

    Cheap (no content read; one listing on S3), and it changes whenever a file
    is added, removed, rewritten or touched, which is what reconciliation
    needs to know.
    """
    folder = as_location(folder)
    h = hashlib.sha256()
    files = total = 0
    for obj in folder.files():
        files += 1
        total += obj.size
        h.update(f"{obj.key}\0{obj.size}\0{obj.mtime_ns}\n".encode())
    return Fingerprint(files=files, bytes=total, digest=h.hexdigest())


def describe_batch(landing: Location | Path, key: str) -> LandingBatch:
    source, batch = split_batch_key(key)
    folder = as_location(landing) / source / batch
    sizes = [obj.size for obj in folder.files()]
    return LandingBatch(key, folder, len(sizes), sum(sizes), folder.mtime())


@dataclass
class CoalescePlan:
    ready: list[list[LandingBatch]] = field(default_factory=list)
    """Groups to ingest now, in arrival order; a group of one is ingested as is."""
    waiting: list[LandingBatch] = field(default_factory=list)


def plan_coalescing(
    pending: list[LandingBatch], now: float, settings: CoalesceSettings
) -> CoalescePlan:
    """Group unregistered batches (in arrival order) into runs.

    A large batch is ready alone. The small batches of one source form one
    group, ready once the source has been quiet for ``window_seconds`` or its
    oldest member has waited ``max_wait_seconds``; otherwise they wait.
    """
    plan = CoalescePlan()
    small: dict[str, list[LandingBatch]] = {}
    for b in pending:
        if settings.window_seconds <= 0 or b.bytes > settings.max_bytes:
            plan.ready.append([b])
        else:
            small.setdefault(split_batch_key(b.key)[0], []).append(b)
    for group in small.values():
        quiet = now - max(b.arrived for b in group) >= settings.window_seconds
        overdue = now - min(b.arrived for b in group) >= settings.max_wait_seconds
        if quiet or overdue:
            plan.ready.append(group)
        else:
            plan.waiting.extend(group)
    return plan


COALESCING_SUFFIX = ".coalescing"
"""Suffix of the hidden folder a merge is assembled in (`.<name>.coalescing`)."""


def merge_batches(landing: Location | Path, group: list[LandingBatch]) -> str:
    """Move the member folders into one batch folder; returns the new key.

    On a local root the new folder is assembled under a hidden name (the
    sensor ignores hidden folders) and renamed into place, so no tick sees it
    half-built; if a move fails, the members already moved are moved back. A
    process killed mid-merge leaves the hidden folder; reconciliation finishes
    it (`interrupted_merges`, `finish_merge`). S3 has no rename: each member's
    objects are copied into the new folder (server-side), then deleted; the
    sensor registers the merged batch only once every copy is in place.
    """
    landing = as_location(landing)
    if len(group) == 1:
        return group[0].key
    source, first = split_batch_key(group[0].key)
    name = f"{first}-c{len(group)}"
    if landing.local is None:
        final = landing / source / name
        for b in group:
            for obj in b.path.files():
                landing.store.copy(
                    f"{b.path.key}/{obj.key}", f"{final.key}/{b.path.name}/{obj.key}"
                )
        for b in group:
            b.path.rmtree()
        return batch_key(source, name)
    root = landing.local
    final = root / source / name
    staged = root / source / f".{name}{COALESCING_SUFFIX}"
    staged.mkdir(parents=True, exist_ok=False)
    moved: list[tuple[Path, Path]] = []
    try:
        for b in group:
            member = Path(b.path.local)
            target = staged / member.name
            os.rename(member, target)
            moved.append((target, member))
        os.rename(staged, final)
    except BaseException:
        for target, original in reversed(moved):
            os.rename(target, original)
        staged.rmdir()
        raise
    return batch_key(source, name)


def interrupted_merges(landing: Location | Path) -> list[tuple[str, Path]]:
    """(batch key it was to become, hidden folder) of each merge a crash left
    behind (local roots; an S3 merge has no hidden folder)."""
    landing = as_location(landing)
    found = []
    if landing.local is None:
        return found
    for staged in sorted(landing.local.glob(f"*/.*{COALESCING_SUFFIX}")):
        if staged.is_dir():
            name = staged.name[1 : -len(COALESCING_SUFFIX)]
            found.append((batch_key(staged.parent.name, name), staged))
    return found


def finish_merge(landing: Location | Path, key: str) -> bool:
    """Rename an interrupted merge's hidden folder into place (its members are
    whole folders, moved one by one); False if a folder of that name exists."""
    landing = as_location(landing)
    source, name = split_batch_key(key)
    staged = landing.local / source / f".{name}{COALESCING_SUFFIX}"
    final = landing.local / source / name
    if final.exists():
        return False
    os.rename(staged, final)
    return True


@dataclass(frozen=True)
class Gap:
    """One difference between the landing zone and what was ingested."""

    key: str
    kind: str
    """unregistered: a batch folder no partition knows; never_ingested: a
    partition without a raw_documents materialisation; changed_since_ingestion:
    the folder's fingerprint differs from the one its last ingestion recorded;
    unfingerprinted: ingested before fingerprints were recorded (reported only);
    landing_missing: a partition whose folder is gone (reported only);
    interrupted_coalescing: a micro-batch merge a crash left in its hidden
    folder (repaired by finishing the merge, then ingesting the batch)."""
    detail: str
    repair: bool

    def as_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "detail": self.detail, "repair": self.repair}


def find_gaps(
    landing: Location | Path,
    registered: list[str],
    ingested: dict[str, str | None],
    now: float,
    grace_seconds: float,
) -> list[Gap]:
    """Every gap between the landing zone and the instance, in arrival order.

    ``ingested`` maps each partition with a raw_documents materialisation to
    the landing fingerprint it recorded (None when it recorded none). An
    unregistered batch younger than ``grace_seconds`` is left to the landing
    sensor (it may be a micro-batch held for coalescing).
    """
    landing = as_location(landing)
    from llama_assets.ingest.landing import landing_batch_keys

    gaps: list[Gap] = []
    known = set(registered)
    for key in landing_batch_keys(landing):
        folder = describe_batch(landing, key)
        if key not in known:
            if now - folder.arrived >= grace_seconds:
                detail = f"{folder.files} files, {folder.bytes} bytes, not registered"
                gaps.append(Gap(key, "unregistered", detail, True))
            continue
        if key not in ingested:
            gaps.append(Gap(key, "never_ingested", "no raw_documents materialisation", True))
            continue
        recorded = ingested[key]
        current = landing_fingerprint(folder.path)
        if recorded is None:
            gaps.append(Gap(key, "unfingerprinted", "ingested without a fingerprint", False))
        elif recorded != current.digest:
            detail = f"now {current.files} files, {current.bytes} bytes; fingerprint changed"
            gaps.append(Gap(key, "changed_since_ingestion", detail, True))
    for key, staged in interrupted_merges(landing):
        if now - staged.stat().st_mtime >= grace_seconds:
            members = sum(1 for p in staged.iterdir() if p.is_dir())
            detail = f"{members} member folder(s) left in {staged.name}"
            repairable = not (landing / key).exists()
            gaps.append(Gap(key, "interrupted_coalescing", detail, repairable))
    on_disk = set(landing_batch_keys(landing))
    for key in registered:
        if key not in on_disk:
            gaps.append(Gap(key, "landing_missing", "partition registered, folder gone", False))
    return gaps
