"""SIGTERM (a spot node being reclaimed) or Ctrl-C: checkpoint the current step, then stop.

While a run with a checkpoint directory trains, SIGTERM or SIGINT only sets a flag; the
loop checks it after every optimizer step, writes a training checkpoint and
raises `TrainingPreempted`, which the asset turns into a retry that resumes
from that checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TrainingPreempted(RuntimeError):
    """SIGTERM arrived: a checkpoint was written at `step`; a retry resumes from it."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint directory"
        super().__init__(f"training stopped by a signal after step {step}; {where}")


@contextlib.contextmanager
def sigterm_flag(enabled: bool) -> Iterator[threading.Event]:
    """While active, SIGTERM and SIGINT only set the returned flag (the loop
    checkpoints and stops, so Ctrl-C loses no step either).

    Signal handlers can only be installed from the main thread; elsewhere (and
    when `enabled` is false) SIGTERM keeps its usual meaning.
    """
    flag = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_sigterm(_signum: int, _frame: Any) -> None:
        flag.set()

    previous = {sig: signal.signal(sig, on_sigterm) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
