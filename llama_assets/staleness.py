"""What is stale, and what a run must rebuild: one definition for the CLI and the daemon.

An asset partition is *stale* when

- it was never materialised (``missing``), or
- one of its ancestors was materialised after it: any asset upstream of it, at
  the partitions the graph maps it to (a batch's own partition along the batch
  pipeline; every batch for the training snapshot; every batch's index for an
  eval report), or
- a blocking check of its latest materialisation failed (it is rebuilt with
  its check, and what depends on it stays blocked until the check passes).

A run may *hold* asset partitions (a batch that stopped at its reject limit in
this invocation): a held partition is not planned, nor is anything that cannot
be built without it (a batch asset whose parent partition is held), and it
does not make its dependents planned. What depends on several partitions (the
training snapshot, on every batch) is still built from the others.

"After" is the event log's storage id, which only grows, not a wall clock.
Re-materialising a partition therefore makes everything downstream of it stale,
as Dagster's own "has a new materialization" does for assets without code
versions. What a run must materialise is the stale set plus everything
downstream of it (each rebuilt partition makes its dependents stale in turn).

Dagster supplies the parts: the asset graph (parents, partition mappings,
topological order) and the event log. ``llama-platform run``/``status`` and
the daemon's ``freshness_sensor`` both call `find_stale`, so they can never
disagree about what is behind.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.events import DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

FAILED_CHECKS_READ = 1_000
"""Failed blocking-check evaluations read per check (newest first); only those that
judged a partition's current materialisation matter."""

AssetPartition = tuple[dg.AssetKey, str | None]
"""An asset and one of its partitions (None for an unpartitioned asset)."""


@dataclass
class Staleness:
    """The stale asset partitions, why each is stale, and what a run must rebuild."""

    order: list[dg.AssetKey]
    """Every asset, in the graph's topological order."""
    stale: dict[AssetPartition, str] = field(default_factory=dict)
    """Each stale asset partition and the reason, in a sentence fragment."""
    plan: dict[AssetPartition, str] = field(default_factory=dict)
    """What a run must materialise: the stale partitions and everything downstream
    of them, each with its reason."""
    newest: dict[AssetPartition, int] = field(default_factory=dict)
    """The newest storage id among a partition's own materialisation and its ancestors'."""
    held: set[AssetPartition] = field(default_factory=set)
    """Partitions not planned because they, or a parent they cannot do without, are held."""

    def is_stale(self, asset: dg.AssetKey, partition: str | None) -> bool:
        return (asset, partition) in self.stale

    def planned(self, asset: dg.AssetKey, partition: str | None) -> bool:
        return (asset, partition) in self.plan


def find_stale(
    instance: dg.DagsterInstance,
    graph: AssetGraph,
    assets: Iterable[dg.AssetKey] | None = None,
    hold: Collection[AssetPartition] = (),
) -> Staleness:
    """Stale asset partitions of `graph` (restricted to `assets` when given; their
    ancestors are always read) as the instance's event log stands now; `hold`
    names partitions this run must not build (see the module's docstring)."""
    wanted = set(assets) if assets is not None else None
    hold = set(hold)
    order = list(graph.toposorted_asset_keys)
    result = Staleness(order=order)
    # Which ancestor made a partition's `newest`, for the reason shown to a person.
    source: dict[AssetPartition, AssetPartition] = {}
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        for key in order:
            node = graph.get(key)
            partitions = _partitions(node, instance)
            own = _latest_storage_ids(instance, key, node.is_partitioned)
            failed = _failed_blocking_checks(instance, graph, key, own)
            for partition in partitions:
                ap = (key, partition)
                upstream, cause, planned_parent = None, None, None
                blocked = ap in hold
                for parent in sorted(node.parent_keys):
                    mapped = _parent_partitions(graph, key, partition, parent)
                    if mapped and all((parent, pp) in result.held for pp in mapped):
                        blocked = True  # nothing of this parent can be built now
                    for pp in mapped:
                        newest = result.newest.get((parent, pp))
                        if newest is not None and (upstream is None or newest > upstream):
                            upstream, cause = newest, source.get((parent, pp), (parent, pp))
                        if planned_parent is None and (parent, pp) in result.plan:
                            planned_parent = (parent, pp)
                mine = own.get(partition)
                reason = None
                if mine is None:
                    reason = "missing"
                elif upstream is not None and upstream > mine:
                    reason = f"{_label(cause)} is newer"
                elif partition in failed:
                    reason = f"its blocking check {failed[partition]} failed"
                candidates = [(s, c) for s, c in ((mine, ap), (upstream, cause)) if s is not None]
                # A held partition passes nothing down: a batch stopped at its reject
                # limit must not make the training snapshot stale run after run.
                if candidates and not blocked:
                    result.newest[ap], source[ap] = max(candidates, key=lambda sc: sc[0])
                if reason:
                    result.stale[ap] = reason
                if blocked:
                    result.held.add(ap)
                elif reason:
                    result.plan[ap] = reason
                elif planned_parent is not None:
                    result.plan[ap] = f"{_label(planned_parent)} is rebuilt first"
    if wanted is not None:
        result.stale = {ap: r for ap, r in result.stale.items() if ap[0] in wanted}
        result.plan = {ap: r for ap, r in result.plan.items() if ap[0] in wanted}
    return result


def _label(ap: AssetPartition | None) -> str:
    if ap is None:
        return "an upstream asset"
    key, partition = ap
    return key.to_user_string() + (f"[{partition}]" if partition else "")


def _partitions(node, instance: dg.DagsterInstance) -> list[str | None]:
    if not node.is_partitioned:
        return [None]
    return list(node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))


def _parent_partitions(
    graph: AssetGraph, child: dg.AssetKey, partition: str | None, parent: dg.AssetKey
) -> list[str | None]:
    if not graph.get(parent).is_partitioned:
        return [None]
    mapped = graph.get_parent_partition_keys_for_child(partition, parent, child)
    return list(mapped.partitions_subset.get_partition_keys())


def _latest_storage_ids(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitioned: bool
) -> Mapping[str | None, int]:
    if partitioned:
        return instance.event_log_storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION
        )
    [record] = instance.get_asset_records([key]) or [None]
    latest = record.asset_entry.last_materialization_record if record else None
    return {None: latest.storage_id} if latest else {}


def _failed_blocking_checks(
    instance: dg.DagsterInstance, graph: AssetGraph, key: dg.AssetKey, own: Mapping
) -> dict[str | None, str]:
    """Partitions of `key` whose latest materialisation failed a blocking check
    (partition -> the check's name). A check evaluation names the materialisation
    it judged (its storage id); `own` maps each partition to its latest one."""
    checks = graph.assets_def_for_key(key).check_specs
    blocking = [spec.key for spec in checks if spec.blocking and spec.asset_key == key]
    current = {storage_id: partition for partition, storage_id in own.items()}
    failed: dict[str | None, str] = {}
    for check in blocking:
        history = instance.event_log_storage.get_asset_check_execution_history(
            check, limit=FAILED_CHECKS_READ, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        for execution in history:
            evaluation = (
                execution.event.dagster_event.event_specific_data if execution.event else None
            )
            target = getattr(evaluation, "target_materialization_data", None)
            if target is not None and target.storage_id in current:
                failed.setdefault(current[target.storage_id], check.name)
    return failed
