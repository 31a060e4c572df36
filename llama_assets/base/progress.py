"""Progress of long work, as log lines a person can read while it runs.

A step that prints nothing for minutes looks hung. `RateLog` turns "done so
far" updates into at most one line every few seconds (plus the last one):
what is done of the total, the rate, and the time left at that rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLog:
    def __init__(
        self,
        what: str,
        total: int,
        log: Callable[[str], None],
        unit: str,
        every_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.log, self.unit = what, total, log, unit
        self.every, self.clock = every_seconds, clock
        self.started = clock()
        self._last = self.started

    def update(self, done: int) -> None:
        now = self.clock()
        if done < self.total and now - self._last < self.every:
            return
        self._last = now
        self.log(self.line(done, now - self.started))

    def line(self, done: int, seconds: float) -> str:
        rate = done / seconds if seconds > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else None
        eta = "" if left is None or done >= self.total else f", {_duration(left)} left"
        return f"{self.what} {done:,}/{self.total:,} {self.unit} ({rate:,.1f} {self.unit}/s{eta})"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
