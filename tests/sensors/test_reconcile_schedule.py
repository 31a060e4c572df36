"""The scheduled reconciliation reports every landing-zone gap, then repairs it."""

from __future__ import annotations

import json
import os
import time

import dagster as dg

from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import BATCHES
from sensors.reconcile import landing_reconciliation
from tests.landing import jsonl, land, topic


def tick(instance, resources):
    # Entered and left in order, so the context's resources never outlive the instance.
    with dg.build_schedule_context(instance=instance, resources=resources) as context:
        return landing_reconciliation(context)


def _age(folder, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(folder, (then, then))


def test_reconciliation_reports_then_repairs_every_gap(layout, instance, resources):
    ingested, changed, lost_run, unseen, fresh, gone = (
        "web/20260101T000000Z",
        "web/20260102T000000Z",
        "web/20260103T000000Z",
        "web/20260104T000000Z",
        "web/20260105T000000Z",
        "web/20260106T000000Z",
    )
    for i, key in enumerate([ingested, changed, lost_run, unseen, fresh]):
        land(layout, key, {"a.jsonl": jsonl({"id": "a", "text": topic(i)})})
    instance.add_dynamic_partitions(BATCHES, [ingested, changed, lost_run, gone])
    for key in (ingested, changed):
        assert dg.materialize(
            [raw_documents], instance=instance, resources=resources, partition_key=key
        ).success
    # After ingestion: a late file lands in one batch; one folder arrived long ago
    # but the sensor missed it; one arrived a second ago (the sensor's business).
    (layout.landing_batch(changed) / "late.txt").write_text(topic(7))
    _age(layout.landing_batch(unseen), 3600)

    requests = tick(instance, resources)

    report = json.loads(layout.reconciliation_report.read_text())
    gaps = {(g["key"], g["kind"]) for g in report["gaps"]}
    assert gaps == {
        (changed, "changed_since_ingestion"),
        (lost_run, "never_ingested"),
        (unseen, "unregistered"),
        (gone, "landing_missing"),
    }
    assert report["repairing"] == [changed, lost_run, unseen]
    assert [(r.partition_key, r.tags["llama/reconcile"]) for r in requests] == [
        (changed, "changed_since_ingestion"),
        (lost_run, "never_ingested"),
        (unseen, "unregistered"),
    ]
    assert unseen in instance.get_dynamic_partitions(BATCHES)
    assert fresh not in instance.get_dynamic_partitions(BATCHES)

    # Repair: run what was requested; the next tick finds only the missing folder.
    for r in requests:
        assert dg.materialize(
            [raw_documents], instance=instance, resources=resources, partition_key=r.partition_key
        ).success
    again = tick(instance, resources)
    assert isinstance(again, dg.SkipReason)
    report = json.loads(layout.reconciliation_report.read_text())
    assert [(g["key"], g["kind"]) for g in report["gaps"]] == [(gone, "landing_missing")]


def test_a_merge_interrupted_by_a_crash_is_finished_and_ingested(layout, instance, resources):
    # A kill -9 between two moves of a merge: one member is inside the hidden
    # folder, the other still in place; nothing is visible to the landing sensor.
    source = layout.landing / "web"
    staged = source / ".20260101T000000Z-c2.coalescing"
    land(layout, "web/20260101T000000Z", {"a.jsonl": jsonl({"id": "a", "text": topic(0)})})
    land(layout, "web/20260101T000005Z", {"b.jsonl": jsonl({"id": "b", "text": topic(1)})})
    staged.mkdir()
    os.rename(source / "20260101T000000Z", staged / "20260101T000000Z")
    _age(staged, 3600)
    _age(source / "20260101T000005Z", 3600)

    requests = tick(instance, resources)

    report = json.loads(layout.reconciliation_report.read_text())
    assert {(g["key"], g["kind"]) for g in report["gaps"]} == {
        ("web/20260101T000000Z-c2", "interrupted_coalescing"),
        ("web/20260101T000005Z", "unregistered"),
    }
    merged = source / "20260101T000000Z-c2"
    assert not staged.exists()
    assert (merged / "20260101T000000Z" / "a.jsonl").is_file()
    assert set(instance.get_dynamic_partitions(BATCHES)) == {
        "web/20260101T000000Z-c2",
        "web/20260101T000005Z",
    }
    assert sorted(r.partition_key for r in requests) == [
        "web/20260101T000000Z-c2",
        "web/20260101T000005Z",
    ]
