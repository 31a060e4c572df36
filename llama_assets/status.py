"""Where things stand: each batch and each model variant, for ``llama-platform status``
and the end of ``llama-platform demo``.

Materialised counts come from the instance; what is stale comes from
`llama_assets.staleness`, the definition ``run`` and the daemon act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from llama_assets.base.layout import DataLayout
from llama_assets.deployment.registry import read_aliases
from llama_assets.ingest.landing import landing_batch_keys
from llama_assets.jobs import BATCH_ASSETS, VARIANT_ASSETS, asset_graph
from llama_assets.partitions import BATCHES
from llama_assets.staleness import find_stale
from llama_assets.training.variants import VARIANTS


@dataclass
class PartitionState:
    key: str
    materialized: int
    """Assets of the partition materialised at least once."""
    total: int
    stale: dict[str, str] = field(default_factory=dict)
    """Stale assets of the partition and why."""


@dataclass
class VariantState(PartitionState):
    champion: str | None = None
    report: dict | None = None
    """The champion's report.json, when there is one."""


@dataclass
class PlatformStatus:
    batches: list[PartitionState]
    waiting: list[str]
    """Landing batches not registered as partitions yet."""
    variants: list[VariantState]


def platform_status(instance: dg.DagsterInstance, layout: DataLayout) -> PlatformStatus:
    staleness = find_stale(instance, asset_graph())

    def state(cls, key: str, assets, **extra):
        done = sum(key in instance.get_materialized_partitions(a.key) for a in assets)
        stale = {
            a.key.to_user_string(): staleness.stale[(a.key, key)]
            for a in assets
            if staleness.is_stale(a.key, key)
        }
        return cls(key, done, len(assets), stale, **extra)

    keys = list(instance.get_dynamic_partitions(BATCHES))
    waiting = [k for k in landing_batch_keys(layout.landing) if k not in keys]
    variants = []
    for variant in VARIANTS:
        champion = read_aliases(layout.aliases(variant))["champion"]
        report = None
        if champion and (layout.reports(variant, champion) / "report.json").is_file():
            report = json.loads((layout.reports(variant, champion) / "report.json").read_text())
        variants.append(
            state(VariantState, variant, VARIANT_ASSETS, champion=champion, report=report)
        )
    return PlatformStatus(
        batches=[state(PartitionState, key, BATCH_ASSETS) for key in keys],
        waiting=waiting,
        variants=variants,
    )


@dataclass
class ReportFigures:
    variant: str
    version: str
    path: Path
    report: dict
    champion: str | None


@dataclass
class DemoSummary:
    artifacts: list[tuple[str, Path]]
    quarantined: int
    reports: list[ReportFigures]


def demo_summary(layout: DataLayout, dagster_home: Path, variants) -> DemoSummary:
    """Where every artifact is, how many records were quarantined, and the
    latest eval report of each of `variants` that has one."""
    artifacts = [
        ("landing zone", layout.landing),
        ("quarantine", layout.root / "quarantine"),
        ("clean shards", layout.shards_root),
        ("LanceDB (table chunks)", layout.lancedb),
        ("training dataset", layout.training_dataset),
        ("models", layout.root / "models"),
        ("eval reports", layout.root / "reports"),
        ("Dagster instance", dagster_home),
    ]
    quarantine = layout.root / "quarantine"
    quarantined = sum(
        (quarantine / obj.key).read_bytes().count(b"\n")
        for obj in quarantine.files()
        if obj.key.endswith(".jsonl")
    )
    reports = []
    for variant in variants:
        latest = layout.models(variant) / "latest.json"
        if not latest.is_file():
            continue
        version = json.loads(latest.read_text())["version"]
        path = layout.reports(variant, version)
        reports.append(
            ReportFigures(
                variant,
                version,
                path,
                json.loads((path / "report.json").read_text()),
                read_aliases(layout.aliases(variant))["champion"],
            )
        )
    return DemoSummary(artifacts, quarantined, reports)
