"""Atomic writes: a reader sees the old artifact or the new one, never half of one.

Every artifact goes to a temporary sibling first, is fsynced, then renamed into
place, so a crash or a retry mid-write never leaves a torn file behind. Files
use ``atomic_open``; directories of files (shard sets, checkpoints) are built
in ``staged_dir`` and swapped in whole.

A process killed mid-write (``kill -9``) leaves its temporary sibling behind.
Such names are hidden (``.<name>.p<pid>h<host>-<random>.tmp``, ``.<name>.old-<random>``),
so no reader lists them as artifacts (readers skip hidden names), and
`collect_stale_temps` removes them once their writer is gone: its pid is not
alive on this machine (the name says which), or the entry has not changed for
`STALE_TEMP_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_HASH_CHUNK = 1 << 20

STALE_TEMP_SECONDS = 3600
"""A temporary entry unchanged this long is abandoned even if its pid is alive
(a reused pid, or a writer on another machine sharing the folder)."""

_TEMP_NAME = re.compile(
    r"\.(?P<name>.+?)\."
    r"(?:(?:p(?P<pid>\d+)(?:h(?P<host>[0-9a-f]{8}))?-)?[A-Za-z0-9_]+\.tmp|old-[0-9a-f]{12})"
)
"""Names of temporary siblings: mkstemp/mkdtemp ``.<name>.[p<pid>h<host>-]<random>.tmp``
and replace_dir's ``.<name>.old-<hex>``."""

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""This machine, in temp names: a pid says something only on the machine that
wrote it (pods sharing a volume each have their own pids)."""

SKIP_COLLECTING = frozenset({"lancedb", "cache"})
"""Top-level folders of the data root that manage their own files (LanceDB)."""


def temp_prefix(name: str) -> str:
    """The prefix of a temporary sibling of `name` written by this process."""
    return f".{name}.p{os.getpid()}h{_HOST}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def is_stale_temp(
    path: Path, now: float | None = None, max_age: float = STALE_TEMP_SECONDS
) -> bool:
    """Whether `path` is a temporary sibling whose writer is gone."""
    match = _TEMP_NAME.fullmatch(path.name)
    if match is None:
        return False
    here = match["host"] in (None, _HOST)
    if match["pid"] is not None and here and not _pid_alive(int(match["pid"])):
        return True
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def collect_stale_siblings(final: Path) -> list[Path]:
    """Remove abandoned temporary siblings of `final` (a killed earlier write)."""
    parent, removed = Path(final).parent, []
    if parent.is_dir():
        for path in parent.glob(f".{glob_escape(Path(final).name)}.*"):
            if is_stale_temp(path):
                _remove(path)
                removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def collect_stale_temps(root: Path, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove every abandoned temporary entry under the data root `root`; returns
    what was removed. It does not descend into temporary entries, into the
    folders in `SKIP_COLLECTING`, nor into landing batches (a person's files:
    only the ``landing/<source>/`` level, where ``ingest`` stages, is looked at)."""
    root, now, removed = Path(root), time.time(), []
    if not root.is_dir():
        return removed
    landing = root / "landing"
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d not in SKIP_COLLECTING]
        for name in [*dirs, *files]:
            path = here / name
            if name.startswith(".") and is_stale_temp(path, now, max_age):
                _remove(path)
                removed.append(path)
        if here.parent == landing:
            dirs[:] = []
        dirs[:] = [d for d in dirs if not d.startswith(".") and (here / d).exists()]
    return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_dir(directory)


def _is_location(path: Any) -> bool:
    # A base/store.py Location (local or S3) writes atomically itself.
    return hasattr(path, "store") and hasattr(path, "key")


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path``
    only if the block completes. A Location (local or S3) is written by its
    store, with the same guarantee."""
    if _is_location(path):
        with path.open(mode, **kwargs) as fh:
            yield fh
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    if _is_location(path):
        path.write_bytes(data)
        return
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def replace_dir(staged: Path, final: Path) -> None:
    """Swap a fully written ``staged`` directory into ``final``.

    rename(2) cannot replace a non-empty directory, so the old one steps aside
    first and is deleted only once the new one is in place; if the second
    rename fails, the old one is put back.
    """
    fsync_tree(staged)
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
    had_old = final.exists()
    if had_old:
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except BaseException:
        if had_old:
            os.replace(old, final)
        raise
    fsync_dir(final.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; when the block
    completes it replaces ``final`` whole, and when it fails it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    collect_stale_siblings(final)
    staged = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final.name), suffix=".tmp"))
    try:
        yield staged
        replace_dir(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
