"""The regression watch's decisions: when a champion must be re-evaluated, and when
it must be rolled back. No Dagster: ``sensors/regression.py`` reads the event
log, calls ``watch_variant``, and acts.

When the held-out data or the index changes, a champion's report no longer
describes it. The watch then re-evaluates, on the newest data and index, first
the champion before it (the reference its non-inferiority checks compare
with), then the champion itself. If the champion's new report fails a blocking
check (a floor, or falling behind the champion before it beyond the
tolerances), or the champion cannot be evaluated at all, the diagnostics are
kept under ``reports/<variant>/<champion>/regressions/<time>/`` (the failing
report and its samples, the champion's report from before the change, and the
report of the champion rolled back to), and ``serving_deployment``'s
``rollback`` command moves the alias back to the champion before it and serves
that one (reason in the alias history and the routing history).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.layout import DataLayout
from llama_assets.deployment.registry import previous_champion, read_aliases

REGRESSIONS_DIR = "regressions"


@dataclass(frozen=True)
class Watch:
    """What to do for one variant: ``ok``, ``evaluate`` a version, ``rollback`` the
    champion, or ``alert`` (it failed, with nothing to roll back to)."""

    action: str
    variant: str
    version: str | None = None
    reason: str = ""
    key: str = ""
    """Identifies the situation (variant, version, data, index): one run or
    rollback per key however often the sensor ticks."""


def read_report(layout: DataLayout, variant: str, version: str) -> dict | None:
    path = layout.reports(variant, version) / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def is_current(report: dict | None, data_version: str, table_version: int | None) -> bool:
    """Whether ``report`` was made on this held-out data and this index version."""
    return (
        report is not None
        and report.get("data_version") == data_version
        and report.get("retrieval", {}).get("table_version") == table_version
    )


def watch_variant(
    layout: DataLayout,
    variant: str,
    data_version: str,
    table_version: int | None,
    evaluation_failed: Callable[[str, str], str | None] = lambda version, key: None,
) -> Watch:
    """``evaluation_failed(version, key)``: the error of a failed re-evaluation run
    of ``version`` for ``key``, or None (no such run, or it has not failed)."""
    aliases = read_aliases(layout.aliases(variant))
    champion = aliases["champion"]
    if champion is None:
        return Watch("ok", variant, reason="no champion")
    situation = f"{data_version}:{table_version}"
    previous = previous_champion(aliases)
    if (
        previous is not None
        and (layout.models(variant, previous) / "trainer_state.json").exists()
        and not is_current(read_report(layout, variant, previous), data_version, table_version)
        and evaluation_failed(previous, f"{variant}:{previous}:{situation}") is None
    ):
        return Watch(
            "evaluate",
            variant,
            previous,
            f"data or index changed: re-evaluate {previous}, the champion before {champion}",
            f"{variant}:{previous}:{situation}",
        )
    key = f"{variant}:{champion}:{situation}"
    report = read_report(layout, variant, champion)
    if not is_current(report, data_version, table_version):
        error = evaluation_failed(champion, key)
        if error is None:
            return Watch(
                "evaluate",
                variant,
                champion,
                f"data or index changed: re-evaluate champion {champion} on data "
                f"{data_version}, index version {table_version}",
                key,
            )
        reason = f"champion {champion} could not be re-evaluated on data {data_version}: {error}"
    elif report["gate"]["passed"]:
        return Watch("ok", variant, champion, "the champion passes on the newest data", key)
    else:
        reason = (
            f"champion {champion} failed {', '.join(report['gate']['failed'])} on data "
            f"{data_version}, index version {table_version}"
        )
    if previous is None:
        return Watch("alert", variant, champion, f"{reason}; no earlier champion", key)
    return Watch("rollback", variant, champion, f"{reason}; rolled back to {previous}", key)


def keep_diagnostics(layout: DataLayout, variant: str, champion: str, reason: str) -> Path:
    """Both reports of the champion (before and after the change), its samples and
    the report of the champion before it, beside the reason."""
    from llama_assets.deployment.evaluation import HISTORY_DIR  # with torch: lazily

    source = layout.reports(variant, champion)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = source / REGRESSIONS_DIR / stamp
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "samples.json"):
        if (source / name).exists():
            shutil.copy2(source / name, out / f"failing_{name}")
    earlier = sorted((source / HISTORY_DIR).glob("*/report.json"))
    if earlier:
        shutil.copy2(earlier[-1], out / "before_change_report.json")
    previous = previous_champion(read_aliases(layout.aliases(variant)))
    if previous and (layout.reports(variant, previous) / "report.json").exists():
        shutil.copy2(
            layout.reports(variant, previous) / "report.json", out / "previous_report.json"
        )
    atomic_write_json(
        out / "reason.json",
        {"variant": variant, "champion": champion, "previous": previous, "reason": reason},
    )
    return out


def rollback_reason(watch: Watch) -> str:
    """What the alias history and the routing history record for the watch's rollback."""
    return f"regression watch: {watch.reason}"
