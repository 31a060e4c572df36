"""Ctrl-C and SIGTERM stop an in-process `llama-platform run`.

Dagster runs each step's code under its own SIGINT handler, which turns the
signal into an error inside the step; an asset with a retry policy then
*retries* the interrupted step, and between steps the in-process executor only
records the signal. So `run` ignored Ctrl-C and SIGTERM. The CLI therefore
watches for the stop itself:

- SIGTERM (what Kubernetes, systemd and `kill` send) is handled like Ctrl-C;
- `InterruptWatch.seen` follows the run's events (on the progress thread): a
  step that failed or went up for retry because of a signal (Dagster's
  interrupt error, KeyboardInterrupt, or a training run that checkpointed and
  stopped), or a signal Dagster recorded between steps, means stop;
- it then raises KeyboardInterrupt in the main thread, where the executor
  waits for the retry, so the run ends within a second or so, and the runner
  turns it into `Interrupted`: the run is marked canceled, its pool slots are
  freed, and the next `run` resumes from what was materialised (training from
  its last checkpoint);
- it raises it again at each later sign that the run goes on, until the runner
  acknowledges it: raised while a step runs, the KeyboardInterrupt is that
  step's error, and Dagster retries the step (a fresh-clone run saw a SIGTERM
  absorbed twice this way, and the run complete).
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._utils.interrupts import check_captured_interrupt

SIGNALLED = {"DagsterExecutionInterruptedError", "KeyboardInterrupt", "TrainingPreempted"}
"""Error classes of a step stopped by a signal rather than by its own failure."""


class Interrupted(RuntimeError):
    """The run was stopped by Ctrl-C or SIGTERM; `run` again resumes it."""


class InterruptWatch:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._main = threading.main_thread().ident
        self._acknowledged = False
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[InterruptWatch]:
        """SIGTERM behaves as Ctrl-C while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def on_sigterm(signum, frame) -> None:
            self.stopping.set()
            # Whatever handles SIGINT right now: Dagster's inside a step, else Python's.
            handler = signal.getsignal(signal.SIGINT)
            if callable(handler):
                handler(signal.SIGINT, frame)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def poll(self) -> None:
        """Called often by the progress thread: a signal Dagster only recorded
        between steps is a stop too."""
        if check_captured_interrupt():
            self.stop()

    def seen(self, error) -> None:
        """A step's error (a SerializableErrorInfo) from a failure or a retry event."""
        while error is not None:
            if error.cls_name in SIGNALLED:
                self.stop()
                return
            error = error.cause

    def stop(self) -> None:
        """Raise KeyboardInterrupt in the main thread, until the runner acknowledges it."""
        self.stopping.set()
        with self._lock:
            if self._acknowledged or self._main is None:
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._main), ctypes.py_object(KeyboardInterrupt)
            )

    def arm(self) -> None:
        """A run starts in the main thread: a stop may be raised in it again."""
        with self._lock:
            self._acknowledged = False

    def acknowledge(self) -> None:
        """The main thread has left the run (stopped or ended): raise nothing more."""
        with self._lock:
            self._acknowledged = True
