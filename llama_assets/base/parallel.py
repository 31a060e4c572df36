"""Process parallelism for the CPU-bound curation stages.

Validation and MinHash are pure Python and numpy per part of a table, so a
batch spreads over the machine's cores by handing parts to worker processes
(threads would serialise on the GIL). Results come back in part order, and at
most `workers + 1` parts are in flight, so memory stays bounded by a few parts
whatever the batch size. Workers are spawned, never forked: polars and the
Dagster step process run threads, which a fork would copy in a broken state.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

WORKERS_ENV = "LLAMA_CPU_WORKERS"
"""Environment variable that caps the worker processes (1 = run in-process)."""

T = TypeVar("T")
R = TypeVar("R")


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2 CPU quota ("<quota> <period>" or "max <period>"): a container's share."""


def cpu_workers(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Worker processes to use: LLAMA_CPU_WORKERS, else the CPUs this process may
    run on, capped by its container's CPU quota (a Kubernetes pod limited to 2
    CPUs on a 64-core node gets 2, not 64)."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {configured!r}")
        return int(configured)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, int(int(quota) / int(period))))


TORCH_THREADS_ENV = "LLAMA_TORCH_THREADS"
"""Environment variable that fixes torch's intra-op threads on the CPU."""


def torch_threads(
    cpu_max: Path = CGROUP_CPU_MAX, loadavg: Callable[[], tuple[float, ...]] = os.getloadavg
) -> int:
    """Intra-op threads for torch on the CPU: LLAMA_TORCH_THREADS, else the CPUs
    this process may use (`cpu_workers`: affinity and container quota) less the
    ones other processes keep busy (the 1-minute load average, less this process).

    OpenMP threads spin while they wait for each other: with one of two cores
    busy elsewhere, two threads made the tiny fine-tune 16x slower (257 against
    4,267 tokens/s) and generation about 9x slower than one thread.
    """
    configured = os.environ.get(TORCH_THREADS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{TORCH_THREADS_ENV} must be a positive integer, got {configured!r}")
        return int(configured)
    cpus = cpu_workers(cpu_max)
    try:
        others = max(0.0, loadavg()[0] - 1.0)
    except OSError:
        others = 0.0
    return max(1, min(cpus, int(cpus - others + 0.5)))


def map_parts(
    fn: Callable[..., R], items: Iterable[T], *args: object, workers: int | None = None
) -> Iterator[R]:
    """`fn(item, *args)` for each item, in order, spread over worker processes.

    With one worker, or one item, everything runs in this process (no start-up
    cost for small batches). `fn` and its arguments must be picklable; an
    exception in a worker is raised here, for the item that failed.
    """
    items = list(items)
    workers = min(workers or cpu_workers(), len(items))
    if workers <= 1:
        for item in items:
            yield fn(item, *args)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item, *args))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(cancel_futures=True)
