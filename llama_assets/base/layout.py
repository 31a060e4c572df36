"""The artifact layout under the data root: the path contract users rely on.

Every location an asset reads or writes comes from here, so the layout
documented in the README and ``docs/architecture.md`` exists in exactly one
place. Batch artifacts are always scoped by ``<source>/<batch>`` so partitions
never overwrite each other. Locations are the same on a local root and on an
S3 root (base/store.py): no stage branches on the scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llama_assets.base.settings import embedding_cache_dir
from llama_assets.base.store import Location, as_location, default_cache_root, open_root

# A source or batch name is one path segment of safe ASCII characters; the
# partition key joins them as ``<source>/<batch>``. Matched with fullmatch: a
# ``$`` would also match before a trailing newline.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or ".." in value:
        raise ValueError(
            f"invalid {what} name {value!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (at most 128 characters)"
        )
    return value


def batch_key(source: str, batch: str) -> str:
    return f"{check_segment(source, 'source')}/{check_segment(batch, 'batch')}"


def split_batch_key(key: str) -> tuple[str, str]:
    source, sep, batch = key.partition("/")
    if not sep:
        raise ValueError(f"batch partition key {key!r} is not of the form <source>/<batch>")
    return check_segment(source, "source"), check_segment(batch, "batch")


@dataclass(frozen=True)
class DataLayout:
    root: Location

    def __post_init__(self) -> None:
        # A local path or an ``s3://`` URI is opened as a root Location.
        if not isinstance(self.root, Location):
            object.__setattr__(self, "root", open_root(self.root))

    # landing zone -----------------------------------------------------------
    @property
    def landing(self) -> Location:
        return self.root / "landing"

    def landing_batch(self, key: str) -> Location:
        source, batch = split_batch_key(key)
        return self.landing / source / batch

    # per-batch stages ---------------------------------------------------------
    def staging(self, stage: str, key: str) -> Location:
        """Intermediate per-batch tables: ``staging/<stage>/<source>/<batch>/``."""
        source, batch = split_batch_key(key)
        return self.root / "staging" / stage / source / batch

    def quarantine(self, key: str) -> Location:
        source, batch = split_batch_key(key)
        return self.root / "quarantine" / source / batch

    def profile(self, key: str) -> Location:
        source, batch = split_batch_key(key)
        return self.root / "profiles" / source / f"{batch}.json"

    def embedding_summary(self, key: str) -> Location:
        """The batch's embedding summary for embedding drift (mean, sample):
        ``embedding_profiles/<source>/<batch>.npz``. A folder of its own, apart
        from ``profiles/``: a batch named ``b1.embeddings`` must not write where
        ``b1``'s files are (tests/reliability/test_names.py)."""
        source, batch = split_batch_key(key)
        return self.root / "embedding_profiles" / source / f"{batch}.npz"

    def embedding_drift(self, key: str) -> Location:
        """The batch's embedding drift result: ``embedding_profiles/<source>/<batch>.json``."""
        source, batch = split_batch_key(key)
        return self.root / "embedding_profiles" / source / f"{batch}.json"

    def shards(self, key: str) -> Location:
        source, batch = split_batch_key(key)
        return self.root / "shards" / source / batch

    @property
    def shards_root(self) -> Location:
        return self.root / "shards"

    @property
    def reconciliation_report(self) -> Location:
        """The latest landing-zone reconciliation: ``<root>/reconciliation/latest.json``."""
        return self.root / "reconciliation" / "latest.json"

    @property
    def scratch(self) -> Path:
        """Scratch space of running steps on this machine's disk (e.g. a compressed
        Parquet file spooled to be seekable): ``<root>/tmp/`` on a local root, so
        nothing is written outside the data root, and what a killed step leaves
        there is collected (`collect_stale_temps`); ``LLAMA_CACHE_DIR/tmp`` when
        the root is on S3."""
        local = self.root.local
        return local / "tmp" if local is not None else default_cache_root() / "tmp"

    # shared stores -------------------------------------------------------------
    @property
    def dedup_index(self) -> Location:
        """The persistent dedup index of every batch on a local root (SQLite, one
        file); an s3:// root keeps it in the instance's Postgres instead
        (`resources/storage.py`), where every run worker sees it."""
        return self.root / "dedup" / "index.sqlite"

    @property
    def sources_config(self) -> Location:
        """Per-source policy (reject-rate limit, languages): ``<root>/sources.toml``."""
        return self.root / "sources.toml"

    def review_queue(self, key: str) -> Location:
        """Borderline documents of a batch, for a person to decide on:
        ``review/queue/<source>/<batch>/`` (a checksummed table) + ``queue.csv``."""
        source, batch = split_batch_key(key)
        return self.root / "review" / "queue" / source / batch

    @property
    def review_decisions(self) -> Location:
        """The review decisions a person edits: ``<root>/review/decisions.csv``."""
        return self.root / "review" / "decisions.csv"

    @property
    def lancedb(self) -> Location:
        return self.root / "lancedb"

    @property
    def embedding_cache(self) -> Location:
        """LanceDB database of cached embeddings, one table per model fingerprint:
        ``<root>/cache/embeddings``, or the folder ``LLAMA_EMBEDDING_CACHE`` names
        (one cache shared by several data roots)."""
        shared = embedding_cache_dir()
        return as_location(shared) if shared else self.root / "cache" / "embeddings"

    @property
    def model_cache(self) -> Location:
        """Local copies of models configured from S3 (``s3://bucket/prefix``)."""
        return self.root / "cache" / "models"

    @property
    def retrieval_golden_set(self) -> Location:
        """User-supplied golden queries (jsonl) for the retrieval eval."""
        return self.root / "evals" / "retrieval_golden.jsonl"

    @property
    def qa_golden_set(self) -> Location:
        """User-supplied golden QA (jsonl: question, answers, doc_ids) for the RAG eval."""
        return self.root / "evals" / "qa_golden.jsonl"

    @property
    def lm_eval_tasks(self) -> Location:
        """The user's lm-eval task definitions (YAML, local data) named in the eval config."""
        return self.root / "evals" / "lm_eval_tasks"

    @property
    def gate_config(self) -> Location:
        """Per-variant overrides of the gate's floors and tolerances (TOML)."""
        return self.root / "evals" / "gate.toml"

    def eval_scratch(self, variant: str, version: str) -> Path:
        """Scratch files of one eval (lm-eval task data, datasets cache) on this
        machine's disk; safe to delete: ``<root>/cache/evals/`` on a local root,
        ``LLAMA_CACHE_DIR/evals/`` when the root is on S3."""
        local = self.root.local
        base = local / "cache" if local is not None else default_cache_root()
        return base / "evals" / variant / version

    @property
    def training_dataset(self) -> Location:
        return self.root / "datasets" / "training"

    def models(self, variant: str, version: str | None = None) -> Location:
        base = self.root / "models" / variant
        return base / version if version else base

    def training_run(self, variant: str, version: str) -> Location:
        """In-progress training checkpoints of one fine-tune:
        ``models/<variant>/runs/<version>/step-NNNNNN/`` (the newest K are kept;
        a re-materialisation with the same variant, settings and data resumes here)."""
        return self.models(variant) / "runs" / version

    def aliases(self, variant: str) -> Location:
        return self.models(variant) / "aliases.json"

    def reports(self, variant: str, version: str | None = None) -> Location:
        base = self.root / "reports" / variant
        return base / version if version else base

    # serving ----------------------------------------------------------------------
    def serving(self, variant: str) -> Location:
        """A variant's serving state: ``serving/<variant>/``."""
        return self.root / "serving" / check_segment(variant, "variant")

    def deployment(self, variant: str) -> Location:
        """The routing state the gateway follows (written by `serving_deployment`):
        ``serving/<variant>/deployment.json``."""
        return self.serving(variant) / "deployment.json"

    def gateway_trip(self, variant: str) -> Location:
        """The gateway's own record of a canary it set to 0% on a burst of 5xx:
        ``serving/<variant>/trip.json``."""
        return self.serving(variant) / "trip.json"

    def gateway_endpoint(self, variant: str) -> Location:
        """Where the running gateway of a variant listens (written by `serve`):
        ``serving/<variant>/gateway.json``."""
        return self.serving(variant) / "gateway.json"

    def rollout_diagnostics(self, variant: str, name: str) -> Location:
        """Evidence saved before a canary is set to 0%:
        ``serving/<variant>/diagnostics/<name>/``."""
        return self.serving(variant) / "diagnostics" / check_segment(name, "diagnostics")

    def prometheus_targets(self, variant: str) -> Location:
        """The variant's backends for Prometheus' file discovery (written by `serve`):
        ``serving/targets/<variant>.json``."""
        return self.root / "serving" / "targets" / f"{check_segment(variant, 'variant')}.json"

    def rollout_policy(self, variant: str) -> Location:
        """An operator's rollout policy (steps, minimum samples and durations, judge
        thresholds), JSON; the defaults without it: ``serving/<variant>/policy.json``."""
        return self.serving(variant) / "policy.json"
