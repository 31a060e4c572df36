"""In-process orchestration for the CLI: what is pending, and materialising it.

Everything goes through ``dagster.materialize`` against the same instance the
UI reads, so CLI runs show up there with all their metadata. Each asset is
materialised in its own step so the terminal can show progress as it goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from llama_assets.ingest.landing import landing_batch_keys
from llama_assets.jobs import BATCH_ASSETS, VARIANT_ASSETS
from llama_assets.partitions import BATCHES
from llama_assets.training.assets import training_dataset

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
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class StepFailed(RuntimeError):
    pass


@dataclass
class Runner:
    instance: dg.DagsterInstance
    resources: dict
    echo: Callable[[str], None] = print
    # On a terminal, show the asset being materialised until its result line replaces it.
    live: bool = False

    # what exists ------------------------------------------------------------
    def register_landing_batches(self) -> list[str]:
        """Register every landing batch that is not a partition yet (as the sensor does)."""
        layout = self.resources["storage"].layout
        known = set(self.instance.get_dynamic_partitions(BATCHES))
        new = [k for k in landing_batch_keys(layout.landing) if k not in known]
        if new:
            self.instance.add_dynamic_partitions(BATCHES, new)
        return new

    def materialized(self, asset: dg.AssetsDefinition) -> set[str]:
        return set(self.instance.get_materialized_partitions(asset.key))

    def pending_batches(self) -> list[str]:
        done = self.materialized(BATCH_ASSETS[-1])
        return [k for k in self.instance.get_dynamic_partitions(BATCHES) if k not in done]

    def model_chain_pending(self, variant: str) -> bool:
        return any(variant not in self.materialized(a) for a in VARIANT_ASSETS)

    # doing it ---------------------------------------------------------------
    def materialize(
        self, asset: dg.AssetsDefinition, partition_key: str | None, run_config: dict | None = None
    ) -> dict:
        label = f"{asset.key.to_user_string():<22} {partition_key or '':<28}"
        if self.live:
            print(f"  … {label}", end="\r", flush=True)
        started = time.perf_counter()
        config = {**QUIET, **(run_config or {})}
        result = dg.materialize(
            [asset],
            instance=self.instance,
            resources=self.resources,
            partition_key=partition_key,
            run_config=config,
            raise_on_error=False,
        )
        seconds = time.perf_counter() - started
        if not result.success:
            failures = [e for e in result.all_events if e.is_step_failure]
            message = failures[0].step_failure_data.error.message.strip() if failures else "failed"
            self.echo(f"  ✗ {label} {seconds:6.1f}s")
            raise StepFailed(f"{asset.key.to_user_string()}[{partition_key}]: {message}")
        metadata = {
            k: v.value
            for event in result.get_asset_materialization_events()
            for k, v in event.materialization.metadata.items()
        }
        headline = " ".join(f"{k}={_fmt(metadata[k])}" for k in HEADLINE if k in metadata)
        self.echo(f"  ✓ {label} {seconds:6.1f}s  {headline}")
        return metadata

    def run_batches(self, keys: Sequence[str]) -> None:
        for i, key in enumerate(keys, 1):
            self.echo(f"batch {i}/{len(keys)}: {key}")
            for asset in BATCH_ASSETS:
                self.materialize(asset, key)

    def run_models(self, variants: Sequence[str], train_config: dict | None = None) -> None:
        self.echo("training dataset")
        self.materialize(training_dataset, None)
        finetune, *rest = VARIANT_ASSETS
        for variant in variants:
            self.echo(f"model variant: {variant}")
            config = (
                {"ops": {"finetuned_checkpoint": {"config": train_config}}}
                if train_config
                else None
            )
            self.materialize(finetune, variant, config)
            for asset in rest:
                self.materialize(asset, variant)

    def run_pending(self, variants: Sequence[str], train_config: dict | None = None) -> bool:
        """Materialise what new data makes stale; returns whether anything ran."""
        new = self.register_landing_batches()
        if new:
            self.echo(f"registered {len(new)} new batch(es): {', '.join(new)}")
        pending = self.pending_batches()
        self.run_batches(pending)
        stale = [v for v in variants if pending or self.model_chain_pending(v)]
        if stale:
            self.run_models(stale, train_config)
        return bool(pending or stale)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
