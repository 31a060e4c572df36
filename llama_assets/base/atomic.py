"""Atomic writes: a reader sees the old artifact or the new one, never half of one.

Every artifact goes to a temporary sibling first, is fsynced, then renamed into
place, so a crash or a retry mid-write never leaves a torn file behind. Files
use ``atomic_open``; directories of files (shard sets, checkpoints) are built
in ``staged_dir`` and swapped in whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_HASH_CHUNK = 1 << 20


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


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path``
    only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    staged = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield staged
        replace_dir(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
