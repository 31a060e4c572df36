"""Partitions: landing batches (dynamic, ``<source>/<batch>``) and model variants."""

from __future__ import annotations

import dagster as dg

from llama_assets.training.variants import VARIANTS

BATCHES = "batches"

batch_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)
variant_partitions = dg.StaticPartitionsDefinition(list(VARIANTS))


def earlier_batch_keys(instance: dg.DagsterInstance, key: str) -> list[str]:
    """Batches registered before ``key``, oldest first.

    Registration order is the order of arrival, so "earlier" is well defined
    and re-materialising a batch never compares it with itself or with a
    batch that arrived after it.
    """
    keys = list(instance.get_dynamic_partitions(BATCHES))
    return keys[: keys.index(key)] if key in keys else keys


def later_batch_keys(instance: dg.DagsterInstance, key: str) -> list[str]:
    """Batches registered after ``key``, oldest first."""
    keys = list(instance.get_dynamic_partitions(BATCHES))
    return keys[keys.index(key) + 1 :] if key in keys else []


def select_batch_keys(
    keys: list[str], wanted: list[str] | None, start: str | None, end: str | None
) -> list[str]:
    """The batch keys a backfill covers, in registration order: `wanted` (all of
    them registered), or the inclusive range `start`..`end`, or every key."""
    if wanted:
        unknown = sorted(set(wanted) - set(keys))
        if unknown:
            raise ValueError(f"unknown batch partitions: {', '.join(unknown)}")
        return [k for k in keys if k in wanted]
    for bound in (start, end):
        if bound is not None and bound not in keys:
            raise ValueError(f"unknown batch partition: {bound}")
    lo = keys.index(start) if start else 0
    hi = keys.index(end) + 1 if end else len(keys)
    return keys[lo:hi]
