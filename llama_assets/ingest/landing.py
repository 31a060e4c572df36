"""The landing zone: ``<root>/landing/<source>/<batch>/``, one folder a batch.

On a local root, files are copied into a hidden temporary folder and renamed
into place, so the sensor (which ignores hidden folders) never sees a
half-copied batch. S3 has no rename: the files are uploaded in place (each
checksummed), and a batch the sensor registered while it was still arriving
is ingested again by the reconciliation schedule (its landing fingerprint
changed), as for any file that lands after its batch was read.

Anyone may drop folders here, so the scan trusts nothing it finds: a folder
whose name is not a valid source or batch name, or a symlink in place of a
folder, is reported as a `LandingProblem` and left alone, and every other
batch goes on (one bad folder must never stop the batches after it). Links are
never followed: they could lead anywhere on the machine.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.atomic import staged_dir
from llama_assets.base.layout import batch_key, check_segment
from llama_assets.base.store import Location, as_location


@dataclass(frozen=True)
class LandingProblem:
    """A landing-zone entry that is not read, and why (a sentence with the fix)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class LandingScan:
    keys: list[str]
    """Every complete batch, in arrival order (batch name, then source)."""
    problems: list[LandingProblem]


def scan_landing(landing: Location | Path) -> LandingScan:
    """The landing zone's batches, and the entries skipped with their reasons."""
    landing = as_location(landing)
    if landing.local is None:
        return _scan_s3(landing)
    landing = landing.local
    if not landing.is_dir():
        return LandingScan([], [])
    found: list[tuple[str, str]] = []
    problems: list[LandingProblem] = []
    for source in sorted(_entries(landing), key=lambda p: p.name):
        if _problem(source, "source", problems):
            continue
        for batch in sorted(_entries(source), key=lambda p: p.name):
            if not _problem(batch, "batch", problems):
                found.append((batch.name, source.name))
    return LandingScan([batch_key(source, batch) for batch, source in sorted(found)], problems)


def _scan_s3(landing: Location) -> LandingScan:
    """The same scan over S3 prefixes (which hold no links)."""
    found: list[tuple[str, str]] = []
    problems: list[LandingProblem] = []
    for source in landing.subdirs():
        if source.name.startswith(".") or _bad_name(source.name, "source", "", problems):
            continue
        for batch in source.subdirs():
            if not batch.name.startswith(".") and not _bad_name(
                batch.name, "batch", source.name, problems
            ):
                found.append((batch.name, source.name))
    return LandingScan([batch_key(source, batch) for batch, source in sorted(found)], problems)


def _bad_name(name: str, what: str, parent: str, problems: list[LandingProblem]) -> bool:
    try:
        check_segment(name, what)
    except ValueError as exc:
        shown = repr(name)[1:-1]
        where = f"{parent}/{shown}" if what == "batch" else shown
        problems.append(LandingProblem(where, f"{exc}; rename the folder to be read"))
        return True
    return False


def landing_batch_keys(landing: Location | Path) -> list[str]:
    """Every complete batch, in arrival order (batch name, then source)."""
    return scan_landing(landing).keys


def _entries(folder: Path) -> list[Path]:
    """Entries of `folder` that could be a source or a batch (hidden ones are
    staging folders or markers; plain files at this level are not batches)."""
    return [
        p for p in folder.iterdir() if not p.name.startswith(".") and (p.is_symlink() or p.is_dir())
    ]


def _problem(entry: Path, what: str, problems: list[LandingProblem]) -> bool:
    shown = repr(entry.name)[1:-1]  # control characters made visible
    where = f"{entry.parent.name}/{shown}" if what == "batch" else shown
    if entry.is_symlink():
        problems.append(
            LandingProblem(
                where,
                f"a symlink in place of a {what} folder is never followed; "
                "copy the files in with `llama-platform ingest` instead",
            )
        )
        return True
    try:
        check_segment(entry.name, what)
    except ValueError as exc:
        problems.append(LandingProblem(where, f"{exc}; rename the folder to be read"))
        return True
    return False


def new_batch_name() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def add_to_landing(
    path: Path, landing: Location | Path, source: str, batch: str | None = None
) -> str:
    """Copy a file or folder into the landing zone as a new batch; returns its key."""
    landing = as_location(landing)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    batch = check_segment(batch or new_batch_name(), "batch")
    final = landing / check_segment(source, "source") / batch
    if final.exists():
        raise FileExistsError(f"batch {source}/{batch} is already in the landing zone: {final}")
    if final.local is None:
        # S3: regular files only (a link is never followed, so never uploaded).
        if path.is_dir() and not path.is_symlink():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        else:
            files = [] if path.is_symlink() else [path]
        for file in files:
            rel = file.relative_to(path).as_posix() if path.is_dir() else file.name
            final.store.upload((final / rel).key, file)
        return batch_key(source, batch)
    with staged_dir(final.local) as staged:
        # Links are copied as links, never followed: the readers reject them, so
        # a link to /etc/shadow inside a folder cannot carry its target in.
        if path.is_dir() and not path.is_symlink():
            shutil.copytree(path, staged, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(path, staged / path.name, follow_symlinks=False)
    return batch_key(source, batch)


def write_landing_batch(landing: Path, source: str, batch: str, files: dict[str, bytes]) -> str:
    """Write `files` (name -> bytes) as a new batch, atomically like `add_to_landing`;
    returns its key."""
    batch = check_segment(batch, "batch")
    final = landing / check_segment(source, "source") / batch
    if final.exists():
        raise FileExistsError(f"batch {source}/{batch} is already in the landing zone: {final}")
    with staged_dir(final) as staged:
        for name, data in files.items():
            (staged / name).write_bytes(data)
    return batch_key(source, batch)
