"""Advisory file locks between processes on one machine.

`flock` is released by the kernel when its holder dies, even by `kill -9`, so a
crashed process never leaves a lock behind (a lock *file* with a PID in it
would).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_holder(path: Path) -> str:
    """The PID written by the lock's current (or last) holder, or "?"."""
    try:
        return Path(path).read_text().strip() or "?"
    except OSError:
        return "?"


@contextmanager
def file_lock(
    path: Path,
    *,
    on_wait: Callable[[], None] | None = None,
    poll_seconds: float = 0.2,
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block.

    When another process holds it, `on_wait` is called once (so a person sees
    why nothing happens), then the lock is awaited.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None and not told:
                    on_wait()
                    told = True
                time.sleep(poll_seconds)
        # Who holds it, for the message of the next one that must wait.
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
