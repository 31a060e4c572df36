"""The landing-zone sensor registers new batches; micro-batches are coalesced."""

from __future__ import annotations

import os
import time

import dagster as dg

from llama_assets.ingest.coalesce import CoalesceSettings, describe_batch, plan_coalescing
from llama_assets.ingest.landing import landing_batch_keys
from llama_assets.partitions import BATCHES
from llama_assets.tables import read_table
from resources.storage import LocalDataRoot
from sensors.landing import landing_zone_sensor
from tests.landing import jsonl, land, topic


def tick(instance, resources):
    # Entered and left in order, so the context's resources never outlive the instance.
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return landing_zone_sensor(context)


def test_sensor_registers_new_batches_once(layout, instance, monkeypatch):
    monkeypatch.setenv("LLAMA_COALESCE_WINDOW_SECONDS", "0")  # one run per batch
    land(layout, "web/20260101T000000Z", {"a.txt": "hello"})
    land(layout, "wiki/20260102T000000Z", {"b.txt": "hello"})
    # A batch still being copied (hidden folder) is not a batch yet.
    (layout.landing / "wiki" / ".20260103T000000Z.tmp").mkdir(parents=True)
    resources = {"storage": LocalDataRoot(root=str(layout.root))}

    result = tick(instance, resources)
    keys = ["web/20260101T000000Z", "wiki/20260102T000000Z"]
    assert [r.partition_key for r in result.run_requests] == keys
    assert [r.run_key for r in result.run_requests] == [f"landing:{k}" for k in keys]
    assert result.dynamic_partitions_requests[0].partition_keys == keys

    instance.add_dynamic_partitions(BATCHES, keys)
    again = tick(instance, resources)
    assert isinstance(again, dg.SkipReason)

    land(layout, "web/20260104T000000Z", {"c.txt": "hello"})
    third = tick(instance, resources)
    assert [r.partition_key for r in third.run_requests] == ["web/20260104T000000Z"]


def _age(folder, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(folder, (then, then))


def test_micro_batches_are_held_then_coalesced_into_one_run(layout, instance, resources):
    """Five small batches of one source arriving seconds apart become one partition
    and one run; a large batch of another source is requested alone at once; the
    merged batch holds every member's documents."""
    micro = [f"stream/20260101T00000{i}Z" for i in range(5)]
    for i, key in enumerate(micro):
        land(layout, key, {"events.jsonl": jsonl({"id": f"e{i}", "text": topic(i)})})
    big = "bulk/20260101T000003Z"
    land(layout, big, {"big.txt": topic(10) * 200})  # > max_bytes below
    env = {"LLAMA_COALESCE_WINDOW_SECONDS": "30", "LLAMA_MICRO_BATCH_MAX_BYTES": "100000"}
    os.environ.update(env)
    try:
        first = tick(instance, resources)
        # The burst is still arriving: only the big batch runs, nothing is moved yet.
        assert [r.partition_key for r in first.run_requests] == [big]
        assert all(layout.landing_batch(k).is_dir() for k in micro)
        instance.add_dynamic_partitions(BATCHES, [big])

        for i, key in enumerate(micro):
            _age(layout.landing_batch(key), 60 - i)  # the source has been quiet 56 s
        second = tick(instance, resources)
    finally:
        for name in env:
            os.environ.pop(name)
    merged = "stream/20260101T000000Z-c5"
    assert [r.partition_key for r in second.run_requests] == [merged]
    assert second.dynamic_partitions_requests[0].partition_keys == [merged]
    assert landing_batch_keys(layout.landing) == [
        "stream/20260101T000000Z-c5",
        "bulk/20260101T000003Z",
    ]
    members = sorted(p.name for p in layout.landing_batch(merged).iterdir())
    assert members == [k.split("/")[1] for k in micro]

    instance.add_dynamic_partitions(BATCHES, [merged])
    assert isinstance(
        tick(instance, resources),
        dg.SkipReason,
    )
    from llama_assets.ingest.assets import raw_documents

    result = dg.materialize(
        [raw_documents], instance=instance, resources=resources, partition_key=merged
    )
    assert result.success
    raw = read_table(layout.staging("raw_documents", merged))
    assert raw.height == 5
    assert sorted(raw["path"].str.split("/").list.first()) == [k.split("/")[1] for k in micro]
    assert raw["batch"].unique().to_list() == ["20260101T000000Z-c5"]


def test_a_steady_trickle_is_flushed_after_max_wait(tmp_path):
    """Batches that never stop arriving are still ingested once the oldest has
    waited max_wait_seconds; coalescing off means one run per batch."""
    landing = tmp_path / "landing"
    for i in range(3):
        (landing / "s" / f"b{i}").mkdir(parents=True)
        (landing / "s" / f"b{i}" / "x.txt").write_text("hello")
    batches = [describe_batch(landing, k) for k in landing_batch_keys(landing)]
    now = max(b.arrived for b in batches)
    settings = CoalesceSettings(window_seconds=10, max_wait_seconds=60)
    assert plan_coalescing(batches, now + 5, settings).ready == []
    assert len(plan_coalescing(batches, now + 5, settings).waiting) == 3
    assert [[b.key for b in g] for g in plan_coalescing(batches, now + 61, settings).ready] == [
        ["s/b0", "s/b1", "s/b2"]
    ]
    off = plan_coalescing(batches, now, CoalesceSettings(window_seconds=0))
    assert [[b.key for b in g] for g in off.ready] == [["s/b0"], ["s/b1"], ["s/b2"]]
