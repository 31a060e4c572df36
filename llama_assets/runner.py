"""In-process orchestration for the CLI: what is pending, and materialising it.

What is pending is `llama_assets.staleness`'s plan (the stale asset partitions
and everything downstream of them), the same definition the daemon's sensors
use. Each planned partition becomes one run of the code location's job for it
(``batch_pipeline``, ``training_dataset_snapshot``, ``train_evaluate_promote``)
with just the planned assets selected; Dagster orders the steps inside a run,
and runs follow the graph (batches in arrival order, then the snapshot, then
each variant). Runs go to the same instance as the UI's, so they show up there
with all their metadata, and a thread follows each run's event log to print a
line per step as it finishes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG, SENSOR_NAME_TAG

from llama_assets.base.atomic import collect_stale_temps
from llama_assets.base.locks import file_lock, lock_holder
from llama_assets.dead_runs import ACTIVE, reap_dead_runs, run_tags
from llama_assets.ingest.landing import scan_landing
from llama_assets.interrupts import Interrupted, InterruptWatch
from llama_assets.jobs import ALL_ASSETS, JOBS, QUIET_RUN_CONFIG, asset_graph, job_for
from llama_assets.partitions import BATCHES, batch_partitions, variant_partitions
from llama_assets.staleness import AssetPartition, Staleness, find_stale
from llama_assets.training.assets import finetuned_checkpoint

# Metadata worth a glance in the progress line of each asset.
HEADLINE = (
    "rows",
    "rejects",
    "documents",
    "exact_duplicates",
    "near_duplicates",
    "drift_score",
    "chunks_per_second",
    "inserted",
    "deleted",
    "table_rows",
    "steps",
    "final_loss",
    "tokens_per_second",
    "finetuned_perplexity",
    "recall@5",
    "action",
    "champion",
)
FOLLOWED = {
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ENGINE_EVENT,
    DagsterEventType.STEP_UP_FOR_RETRY,
}
RUN_LOCK = ".run.lock"
"""In the instance folder: held by the CLI process that is materialising."""
POLL_SECONDS = 0.3
WAIT_POLL_SECONDS = 2.0
"""How often a run waiting for another process's run of its partition looks again."""
PARTITION_TAG, SENSOR_TAG, BACKFILL_TAG = (
    "dagster/partition",
    "dagster/sensor_name",
    "dagster/backfill",
)
QUIET_SECONDS = 10.0
"""Off a terminal, a running step's log lines are echoed at most this often."""


class StepFailed(RuntimeError):
    """A run stopped: a step failed or a blocking check did not pass."""


@dataclass(frozen=True)
class PlannedRun:
    """One run: a job, one of its partitions, and the assets to materialise."""

    job_name: str
    partition: str | None
    assets: tuple[dg.AssetKey, ...]
    """In the graph's topological order."""

    @property
    def title(self) -> str:
        if self.job_name == job_for(batch_partitions).name:
            return f"batch {self.partition}"
        if self.job_name == job_for(variant_partitions).name:
            return f"model variant: {self.partition}"
        return "training dataset"


@dataclass(frozen=True)
class Stop:
    run: PlannedRun
    reason: str


@dataclass
class Outcome:
    """What one invocation ran, and what stopped (each with its sentence)."""

    ran: list[PlannedRun] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)


@dataclass
class Runner:
    instance: dg.DagsterInstance
    resources: dict
    echo: Callable[[str], None] = print
    # On a terminal, show the asset being materialised until its result line replaces it.
    live: bool = False
    _defs: dg.Definitions | None = field(default=None, init=False, repr=False)
    watch: InterruptWatch = field(default_factory=InterruptWatch, init=False, repr=False)

    # what exists ------------------------------------------------------------
    def register_landing_batches(self) -> list[str]:
        """Register every landing batch that is not a partition yet (as the sensor does)."""
        layout = self.resources["storage"].layout
        known = set(self.instance.get_dynamic_partitions(BATCHES))
        scan = scan_landing(layout.landing)
        for problem in scan.problems:
            self.echo(f"skipped in the landing zone: {problem}")
        new = [k for k in scan.keys if k not in known]
        if new:
            self.instance.add_dynamic_partitions(BATCHES, new)
        return new

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One CLI run at a time per instance: a second `run`, `backfill` or `demo`
        waits (and says so) instead of materialising the same partitions at once."""
        lock = Path(self.instance.root_directory) / RUN_LOCK

        def waiting() -> None:
            self.echo(
                f"another llama-platform run (pid {lock_holder(lock)}) is working on this "
                "instance; waiting for it to finish (Ctrl-C to stop waiting)"
            )

        with file_lock(lock, on_wait=waiting):
            yield

    def reap(self) -> None:
        """Fail the runs whose process died, so their pool slots are free again."""
        for dead in reap_dead_runs(self.instance):
            self.echo(
                f"run {dead.run_id[:8]} (pid {dead.pid}) had died; marked failed and its "
                "pool slots given back"
            )

    def recover(self) -> None:
        """What a killed run left: its run record and pool slots (`reap`), and the
        temporary files and folders of its writes, removed before anything reads."""
        self.reap()
        # Temporary copies exist on a local root only (S3 writes are single PUTs).
        root = self.resources["storage"].layout.root.local
        collected = collect_stale_temps(root) if root is not None else []
        if collected:
            self.echo(f"removed {len(collected)} temporary entries that killed writes left")

    def materialized(self, asset: dg.AssetsDefinition) -> set[str]:
        return set(self.instance.get_materialized_partitions(asset.key))

    def staleness(self, hold: Collection[AssetPartition] = ()) -> Staleness:
        return find_stale(self.instance, asset_graph(), hold=hold)

    def plan(
        self, variants: Sequence[str], hold: Collection[AssetPartition] = ()
    ) -> list[PlannedRun]:
        """The runs that bring every batch, the snapshot and `variants` up to date
        (nothing that needs a `hold` partition)."""
        staleness = self.staleness(hold)
        order = {key: i for i, key in enumerate(staleness.order)}
        by_run: dict[tuple[str, str | None], list[dg.AssetKey]] = {}
        for asset, partition in staleness.plan:
            partitions_def = asset_graph().get(asset).partitions_def
            if partitions_def == variant_partitions and partition not in variants:
                continue
            by_run.setdefault((job_for(partitions_def).name, partition), []).append(asset)
        batches = list(self.instance.get_dynamic_partitions(BATCHES))
        first_step = {
            job.name: min(order[a.key] for a in ALL_ASSETS if job_for(a.partitions_def) is job)
            for job in JOBS
        }

        def position(run: tuple[str, str | None]) -> tuple[int, int]:
            job_name, partition = run
            within = (
                batches.index(partition)
                if partition in batches
                else list(variants).index(partition)
                if partition in variants
                else 0
            )
            return first_step[job_name], within

        return [
            PlannedRun(name, partition, tuple(sorted(by_run[(name, partition)], key=order.get)))
            for name, partition in sorted(by_run, key=position)
        ]

    # doing it ---------------------------------------------------------------
    def wait_for_other_runs(self, partition: str | None) -> bool:
        """Wait while a run this process did not start (one the daemon's sensors
        launched, a backfill from the UI) materialises `partition`, and say so:
        the same partition written twice at once is wasted work at best. A run
        whose process died is reaped, never waited for. True when it waited."""
        if partition is None:
            return False
        said: set[str] = set()
        while True:
            self.reap()
            active = self.instance.get_runs(
                filters=dg.RunsFilter(statuses=ACTIVE, tags={PARTITION_NAME_TAG: partition})
            )
            if not active:
                return bool(said)
            for other in active:
                if other.run_id not in said:
                    said.add(other.run_id)
                    by = other.tags.get(SENSOR_NAME_TAG) or other.tags.get(BACKFILL_ID_TAG)
                    self.echo(
                        f"  run {other.run_id[:8]}{f' (launched by {by})' if by else ''} is "
                        f"materialising {partition}; waiting for it to finish "
                        "(Ctrl-C to stop waiting)"
                    )
            time.sleep(WAIT_POLL_SECONDS)

    def execute(self, run: PlannedRun, run_config: dict | None = None) -> dict:
        """Materialise `run` in-process, a progress line per step; returns the
        materialisations' metadata. Raises StepFailed when a step fails."""
        self.wait_for_other_runs(run.partition)
        job = self._definitions().resolve_job_def(run.job_name)
        run_id = str(uuid.uuid4())
        progress = _Progress(self.instance, run_id, run.partition, self.echo, self.live, self.watch)
        self.watch.arm()
        progress.start()
        try:
            result = job.execute_in_process(
                run_config={**QUIET_RUN_CONFIG, **(run_config or {})},
                instance=self.instance,
                partition_key=run.partition,
                asset_selection=list(run.assets),
                run_id=run_id,
                tags=run_tags(),
                raise_on_error=False,
            )
            # Inside the try: the progress thread may raise the stop in this thread
            # (InterruptWatch.stop) just as the run ends, until it is acknowledged.
            self.watch.acknowledge()
            progress.stop()
        except KeyboardInterrupt:
            self.watch.acknowledge()
            progress.stop()
            self._cancel(run_id)
            raise Interrupted(_stopped_sentence(run, progress.running)) from None
        if self.watch.stopping.is_set():
            self._cancel(run_id)  # a step may have stopped while it waited for a pool slot
            raise Interrupted(_stopped_sentence(run, progress.running))
        if not result.success:
            raise StepFailed(_failure_sentence(result, run))
        return progress.metadata

    def run_batches(self, keys: Sequence[str]) -> Outcome:
        """Re-materialise every batch asset of each of `keys` (a backfill); a batch
        that stops is reported and the others go on."""
        graph = asset_graph()
        batch_assets = tuple(k for k in graph.toposorted_asset_keys if _batch_asset(graph, k))
        outcome = Outcome()
        with self.watch.installed(), self.exclusive():
            self.recover()
            for i, key in enumerate(keys, 1):
                self._run_batch(outcome, i, key, len(keys), batch_assets)
        return outcome

    def _run_batch(self, outcome, i, key, total, batch_assets) -> None:
        self.echo(f"batch {i}/{total}: {key}")
        run = PlannedRun(job_for(batch_partitions).name, key, batch_assets)
        try:
            self.execute(run)
            outcome.ran.append(run)
        except StepFailed as failure:
            self._stopped(outcome, run, failure)

    def _run_waves(self, variants: Sequence[str], train_config: dict | None) -> Outcome:
        """Run what is pending, one run at a time, planning again after each: a run
        that stops holds its partitions (they and what cannot be built without
        them wait for the next invocation), and everything else still runs."""
        outcome = Outcome()
        hold: set[AssetPartition] = set()
        attempted: set[tuple[str, str | None]] = set()
        while True:
            pending = [
                r for r in self.plan(variants, hold) if (r.job_name, r.partition) not in attempted
            ]
            if not pending:
                return outcome
            run = pending[0]
            if self.wait_for_other_runs(run.partition):
                continue  # plan again: what that run materialised is no longer pending
            attempted.add((run.job_name, run.partition))
            self.echo(run.title)
            config = None
            if train_config and finetuned_checkpoint.key in run.assets:
                config = {"ops": {finetuned_checkpoint.node_def.name: {"config": train_config}}}
            try:
                self.execute(run, config)
                outcome.ran.append(run)
            except StepFailed as failure:
                hold.update((asset, run.partition) for asset in run.assets)
                self._stopped(outcome, run, failure)

    def run_pending(self, variants: Sequence[str], train_config: dict | None = None) -> Outcome:
        """Materialise what is stale for the batches, the snapshot and `variants`."""
        with self.watch.installed(), self.exclusive():
            self.recover()
            new = self.register_landing_batches()
            if new:
                self.echo(f"registered {len(new)} new batch(es): {', '.join(new)}")
            return self._run_waves(variants, train_config)

    def _cancel(self, run_id: str) -> None:
        """An interrupted run: canceled, never left STARTED, its pool slots free."""
        run = self.instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_canceled(run, "stopped by Ctrl-C or SIGTERM")
        if self.instance.event_log_storage.supports_global_concurrency_limits:
            self.instance.event_log_storage.free_concurrency_slots_for_run(run_id)

    def _stopped(self, outcome: Outcome, run: PlannedRun, failure: StepFailed) -> None:
        outcome.stops.append(Stop(run, str(failure)))
        self.echo(f"  stopped: {failure}")
        self.echo("  (the other runs go on; this one is reported again at the end)")

    def _definitions(self) -> dg.Definitions:
        if self._defs is None:
            self._defs = dg.Definitions(assets=ALL_ASSETS, jobs=JOBS, resources=self.resources)
        return self._defs


def _stopped_sentence(run: PlannedRun, step: str | None) -> str:
    where = f"{step} of {run.title}" if step else run.title
    return (
        f"stopped by a signal during {where}. What was materialised is kept; "
        "`llama-platform run` resumes from there (training from its last checkpoint)."
    )


def _failure_sentence(result, run: PlannedRun) -> str:
    """Why a run stopped, as a person should read it: a failed blocking check's own
    verdict (the reject limit says which batch, how many records and the fix),
    else the failed step's message."""
    for event in result.all_events:
        evaluation = event.event_specific_data
        if (
            event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            and not evaluation.passed
            and evaluation.blocking
        ):
            return evaluation.description or f"check {evaluation.check_name} failed"
    failures = [e for e in result.all_events if e.is_step_failure]
    if not failures:
        return f"{run.title} failed"
    event = failures[0]
    error = event.step_failure_data.error
    # The exception a step raised, not the retry wrapper's "Exceeded max_retries".
    while error.cause is not None and error.cls_name in {"RetryRequestedFromPolicy"}:
        error = error.cause
    message = error.message.strip()
    where = event.step_key + (f"[{run.partition}]" if run.partition else "")
    return f"{where}: {message}{explain(message)}"


EXPLAINED = {
    "No space left on device": "the disk is full: free space on the data root's disk (or "
    "point LLAMA_DATA_ROOT at a larger one), then run again; nothing published was lost",
    "Disk quota exceeded": "the disk quota is used up: free space or raise the quota, then "
    "run again; nothing published was lost",
}
"""Errors of the machine, not of the data: the fix a person needs, after the message."""


def explain(message: str) -> str:
    for cause, fix in EXPLAINED.items():
        if cause in message:
            return f" ({fix})"
    return ""


def _batch_asset(graph, key: dg.AssetKey) -> bool:
    return graph.get(key).partitions_def == batch_partitions


class _Progress:
    """Follows a run's event log on a thread: a line per finished step."""

    def __init__(self, instance, run_id: str, partition, echo, live: bool, watch) -> None:
        self.instance, self.run_id, self.partition = instance, run_id, partition
        self.echo, self.live, self.watch = echo, live, watch
        # The step a stop names: the last one started or waiting for its pool slot. Not
        # cleared when it succeeds: a signal inside a step can take effect only after
        # it ends (Dagster defers it outside its interruptible sections).
        self.running: str | None = None
        self.metadata: dict = {}
        self._cursor: str | None = None
        self._started: dict[str, float] = {}
        self._step_metadata: dict[str, dict] = {}
        self._last_log: dict[str, float] = {}
        self._blocked: set[str] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._drain()  # whatever arrived after the last poll

    def _follow(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            self.watch.poll()
            self._drain()

    def _drain(self) -> None:
        while True:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self._cursor)
            for record in connection.records:
                self._on(record.event_log_entry)
            self._cursor = connection.cursor
            if not connection.has_more:
                return

    def _label(self, step: str) -> str:
        return f"{step:<22} {self.partition or '':<28}"

    def _on(self, entry) -> None:
        event = entry.dagster_event
        step = entry.step_key or ""
        if event is None:
            self._log_line(step, entry)
            return
        if event.event_type not in FOLLOWED:
            return
        if event.event_type == DagsterEventType.ENGINE_EVENT:
            pool = (event.engine_event_data.metadata or {}).get("pool")
            if pool is not None:
                self.running = step  # a stop while it waits is a stop during this step
                if step not in self._blocked:
                    # A step waiting for a pool slot must not look hung: say who holds it.
                    self._blocked.add(step)
                    holders = _holders(self.instance, pool.value, self.run_id)
                    self.echo(f"  ⏸ {self._label(step)} waiting for pool {pool.value!r}{holders}")
            return
        if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY:
            self.watch.seen(event.step_retry_data.error)
            return
        if event.event_type == DagsterEventType.STEP_START:
            self.running = step
            self._started[step] = entry.timestamp
            if self.live:
                print(f"  … {self._label(step)}", end="\r", flush=True)
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            values = {
                k: v.value
                for k, v in event.step_materialization_data.materialization.metadata.items()
            }
            self._step_metadata.setdefault(step, {}).update(values)
            self.metadata.update(values)
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            seconds = entry.timestamp - self._started.get(step, entry.timestamp)
            if event.event_type == DagsterEventType.STEP_FAILURE:
                self.watch.seen(event.step_failure_data.error)
                self.echo(f"  ✗ {self._label(step)} {seconds:6.1f}s")
                return
            metadata = self._step_metadata.get(step, {})
            headline = " ".join(f"{k}={_fmt(metadata[k])}" for k in HEADLINE if k in metadata)
            self.echo(f"  ✓ {self._label(step)} {seconds:6.1f}s  {headline}")

    def _log_line(self, step: str, entry) -> None:
        """A step's own log message (training steps, embedding progress): shown while
        the step runs, so minutes of work never look hung."""
        if not step or entry.level < logging.INFO or not entry.user_message:
            return
        message = entry.user_message.splitlines()[0]
        if self.live:
            print(f"  … {self._label(step)} {message[:70]:<70}", end="\r", flush=True)
        elif entry.timestamp - self._last_log.get(step, 0.0) >= QUIET_SECONDS:
            self._last_log[step] = entry.timestamp
            self.echo(f"    {step}: {message}")


def _holders(instance: dg.DagsterInstance, pool: str, run_id: str) -> str:
    """ ", held by run … (batch …)" for the runs holding `pool`'s slots."""
    try:
        info = instance.event_log_storage.get_concurrency_info(pool)
    except Exception:  # noqa: BLE001 - a hint only; never fail the run for it
        return ""
    holders = []
    for slot in info.claimed_slots:
        if slot.run_id == run_id:
            continue
        run = instance.get_run_by_id(slot.run_id)
        partition = run.tags.get("dagster/partition") if run else None
        holders.append(slot.run_id[:8] + (f" ({partition})" if partition else ""))
    if not holders:
        return ""
    return ", held by run " + ", ".join(sorted(set(holders))) + " (it finishes first)"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
