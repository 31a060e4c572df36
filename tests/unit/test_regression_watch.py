"""The regression watch's decisions on hand-written reports and alias histories."""

from __future__ import annotations

import json

from llama_assets.deployment.registry import promote, read_aliases
from llama_assets.deployment.regression import keep_diagnostics, rollback_reason, watch_variant


def write_report(layout, version: str, data: str, table: int, passed: bool = True) -> None:
    out = layout.reports("tiny", version)
    out.mkdir(parents=True, exist_ok=True)
    gate = {"passed": passed, "failed": [] if passed else ["improves_on_base"]}
    report = {
        "version": version,
        "data_version": data,
        "retrieval": {"table_version": table},
        "gate": gate,
        "evaluated_at": f"2026-01-01T00:00:0{len(list(out.iterdir()))}",
    }
    (out / "report.json").write_text(json.dumps(report))
    (layout.models("tiny", version)).mkdir(parents=True, exist_ok=True)
    (layout.models("tiny", version) / "trainer_state.json").write_text("{}")


def test_no_champion_nothing_to_watch(layout):
    assert watch_variant(layout, "tiny", "d1", 1).action == "ok"


def test_new_data_re_evaluates_the_champion_before_it_first(layout):
    promote(layout.aliases("tiny"), "v1", "first")
    promote(layout.aliases("tiny"), "v2", "better")
    write_report(layout, "v1", "d1", 1)
    write_report(layout, "v2", "d1", 1)
    assert watch_variant(layout, "tiny", "d1", 1).action == "ok"

    watch = watch_variant(layout, "tiny", "d2", 1)
    assert (watch.action, watch.version, watch.key) == ("evaluate", "v1", "tiny:v1:d2:1")
    write_report(layout, "v1", "d2", 1)
    watch = watch_variant(layout, "tiny", "d2", 1)
    assert (watch.action, watch.version) == ("evaluate", "v2")
    # A new index version alone is a change too.
    assert watch_variant(layout, "tiny", "d2", 2).version == "v1"


def test_a_failing_champion_is_to_be_rolled_back_with_its_reason(layout):
    promote(layout.aliases("tiny"), "v1", "first")
    promote(layout.aliases("tiny"), "v2", "better")
    write_report(layout, "v1", "d2", 1)
    write_report(layout, "v2", "d2", 1, passed=False)
    watch = watch_variant(layout, "tiny", "d2", 1)
    assert watch.action == "rollback" and watch.version == "v2"
    assert "failed improves_on_base on data d2" in watch.reason
    assert watch.reason.endswith("rolled back to v1")
    assert rollback_reason(watch) == f"regression watch: {watch.reason}"
    # Diagnostics are kept before anything moves (serving_deployment's rollback moves it).
    diagnostics = keep_diagnostics(layout, "tiny", watch.version, watch.reason)
    assert read_aliases(layout.aliases("tiny"))["champion"] == "v2"
    assert json.loads((diagnostics / "reason.json").read_text())["previous"] == "v1"
    assert (diagnostics / "failing_report.json").exists()
    assert (diagnostics / "previous_report.json").exists()


def test_a_champion_that_cannot_be_evaluated_is_rolled_back(layout):
    promote(layout.aliases("tiny"), "v1", "first")
    promote(layout.aliases("tiny"), "v2", "better")
    write_report(layout, "v1", "d2", 1)
    write_report(layout, "v2", "d1", 1)

    def failed(version, key):
        return "SafetensorError: invalid header" if version == "v2" else None

    watch = watch_variant(layout, "tiny", "d2", 1, failed)
    assert watch.action == "rollback"
    assert "could not be re-evaluated" in watch.reason and "invalid header" in watch.reason


def test_a_failing_first_champion_raises_an_alert(layout):
    promote(layout.aliases("tiny"), "v1", "first")
    write_report(layout, "v1", "d2", 1, passed=False)
    watch = watch_variant(layout, "tiny", "d2", 1)
    assert watch.action == "alert" and "no earlier champion" in watch.reason
