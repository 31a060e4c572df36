"""What the reliability tests watch in a run's event log, to act on an event
(kill, signal) rather than after a sleep: a step started, a step logged a line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {run.run_id for run in instance.get_runs()}


def step_started(
    instance: dg.DagsterInstance, step: str, not_in_runs: Collection[str] = ()
) -> bool:
    """Whether `step` has started in a run other than `not_in_runs` (storage ids of a
    run-sharded SQLite event log are per run, so runs are compared, not cursors)."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=DagsterEventType.STEP_START), limit=50, ascending=False
    )
    return any(
        r.event_log_entry.step_key == step and r.event_log_entry.run_id not in not_in_runs
        for r in records
    )


def step_logged(instance: dg.DagsterInstance, step: str, text: str, runs: int = 3) -> bool:
    """Whether `step` logged a line holding `text` in one of the last `runs` runs."""
    for run in instance.get_runs(limit=runs):
        for entry in instance.all_logs(run.run_id):
            if entry.step_key == step and text in (entry.user_message or ""):
                return True
    return False


def steps_in_flight(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The steps of `run_id` that started and never ended (where a kill landed)."""
    started, ended = [], set()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started.append(entry.step_key)
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ended.add(entry.step_key)
    return [step for step in started if step not in ended]


def wait_for(
    ready: Callable[[], bool], what: str, alive: Callable[[], bool], timeout: float = 600
) -> None:
    """Poll `ready` until true; fail when `alive` turns false or after `timeout`
    (a bound for a hung run, not a timing the test relies on)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert alive(), f"exited before {what}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


class RunFollower:
    """Follows the event logs of the runs started after it was made, incrementally
    (cheap enough to poll often): `seen(step, text)` says whether one of them has
    started `step` (text None) or logged a line of `step` holding `text`."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.before = run_ids(instance)
        self.cursors: dict[str, str | None] = {}
        self.watched: set[tuple[str, str | None]] = set()
        self.hits: dict[tuple[str, str | None], str] = {}
        """(step, text) -> the run it happened in."""

    def _follow(self) -> None:
        for run in self.instance.get_runs(limit=3):
            if run.run_id in self.before:
                continue
            while True:
                cursor = self.cursors.get(run.run_id)
                connection = self.instance.get_records_for_run(run.run_id, cursor=cursor)
                for record in connection.records:
                    self._on(record.event_log_entry)
                self.cursors[run.run_id] = connection.cursor
                if not connection.has_more:
                    break

    def _on(self, entry) -> None:
        if not entry.step_key:
            return
        event = entry.dagster_event
        if event is not None and event.event_type == DagsterEventType.STEP_START:
            self.hits.setdefault((entry.step_key, None), entry.run_id)
        elif event is None and entry.user_message:
            for step, text in list(self.watched):
                if step == entry.step_key and text and text in entry.user_message:
                    self.hits.setdefault((step, text), entry.run_id)

    def seen(self, step: str, text: str | None = None) -> str | None:
        """The run in which `step` started (or logged `text`), else None."""
        self.watched.add((step, text))
        if (step, text) not in self.hits:
            self._follow()
        return self.hits.get((step, text))


def kill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and every process below it (a run worker and its step
    subprocesses, as an out-of-memory kill of the pod would): the children first,
    so that none outlives its parent for a moment. Returns the PIDs killed."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    for each in reversed(tree):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    return tree


REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def daemon(env: dict, log_path: Path) -> Iterator[Callable[[], bool]]:
    """`dagster-daemon run` on the checkout's workspace (its sensors launch runs as
    in production); killed with everything under it (kill -9) when the block ends.
    Yields whether it still runs."""
    daemon_bin = Path(sys.executable).parent / "dagster-daemon"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(daemon_bin), "run", "-w", str(REPO / "workspace.yaml")],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield lambda: process.poll() is None
        finally:
            kill_tree(process.pid)
            process.wait()
