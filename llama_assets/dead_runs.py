"""Runs whose process died: marked failed, their pool slots given back.

A run killed with ``kill -9`` (or by the OOM killer) never reports its end: it
stays STARTED, counts toward ``max_concurrent_runs`` and keeps its pool slots
(``dedup_index``, ``gpu``), so every later run waits forever. Dagster's run
monitoring cannot see it: the default run launcher has no health check for
the run worker's process, and in-process runs (the CLI's) have none at all.

Every run worker logs its PID in an engine event ("Started process for run");
a run on this machine whose process is gone is dead. It is reported failed,
with a sentence saying why, and its slots are freed, before the CLI plans and
on every tick of `dead_run_sensor`. Runs launched elsewhere (Kubernetes pods)
are left to that launcher's own run monitoring.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import DefaultRunLauncher

HOST_TAG = "llama/host"
"""Set on the CLI's runs: the machine whose process table tells if they live."""

ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    pid: int
    partition: str | None


def run_tags() -> dict[str, str]:
    """Tags of a run this process executes."""
    return {HOST_TAG: socket.gethostname()}


def reap_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Fail every active run of this machine whose process is gone; free its slots."""
    local_launcher = isinstance(instance.run_launcher, DefaultRunLauncher)
    here = socket.gethostname()
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE)):
        host = run.tags.get(HOST_TAG)
        if host is None and not local_launcher or host not in (None, here):
            continue
        pid = _run_pid(instance, run.run_id)
        if pid is None or _alive(pid, since=run_start(instance, run.run_id)):
            continue
        instance.report_run_failed(
            run,
            f"The run's process (pid {pid}) is gone (killed or crashed); its pool slots "
            "were given back. Materialise again to finish what it started.",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        dead.append(DeadRun(run.run_id, pid, run.tags.get("dagster/partition")))
    release_ended_runs_claims(instance)
    return dead


def release_ended_runs_claims(instance: dg.DagsterInstance) -> list[str]:
    """Free the pool slots and queue places that runs which have ended still hold.

    A run stopped while one of its steps waited for a slot (a signal, a crash of
    the step's process) can end with its place in the pool's queue left behind;
    the queue is served in order, so every later run would wait behind it for
    ever, polling. Returns the run ids whose claims were freed."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = set(storage.get_concurrency_run_ids())  # places in a pool's queue
    for pool in storage.get_concurrency_keys():
        holders |= {slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots}
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


def run_start(instance: dg.DagsterInstance, run_id: str) -> float | None:
    record = instance.get_run_record_by_id(run_id)
    return record.start_time if record else None


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The PID the run worker logged; the newest wins (a resumed run logs again)."""
    pid = None
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata or {}
        if "pid" in metadata:
            pid = int(metadata["pid"].value)
    return pid


def _alive(pid: int, since: float | None) -> bool:
    """Whether `pid` runs and is the process that started at or before `since`
    (a PID reused by a later process is not the run's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _process_start(pid)
    return started is None or since is None or started <= since + 1.0


def _process_start(pid: int) -> float | None:
    """The process's start time in epoch seconds, from /proc (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
