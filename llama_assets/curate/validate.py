"""Layer 2 over a batch: PII masking, language identification, quality scores,
and the two uses of each document.

Masking (curate/pii.py: text, title and messages) happens first, so that
everything downstream (the language and quality signals, the shards, the
embeddings, the index, training) only ever sees masked text.

Only what makes a document unusable is quarantined: a language the source does
not allow (`language:<code>`), or a row that fails the table's schema. The
web-text quality rules (curate/rules.py) decide what is fit to *train* on, not
what is searchable, so a document that fails them stays, recorded per document:

- `for_index`: it reaches the RAG index (valid, allowed language, masked, and
  - in clean_shards - not a duplicate), unless its source opts out
  (`use_for_index = false` in sources.toml);
- `for_training`: it also passes the quality rules (or a person approved it
  in review), and its source does not opt out (`use_for_training = false`);
- `training_exclusion`: why not, when not: ``source:use_for_training=false``,
  ``quality:<rule>,<rule>`` (held documents too, until a person approves), or
  ``review:rejected``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from llama_assets.base.rejects import Reject
from llama_assets.curate.language import identify_languages
from llama_assets.curate.pii import mask_pii, mask_pii_batch
from llama_assets.curate.quality import quality_signals_frame
from llama_assets.curate.review import (
    REJECTED_REASON,
    any_borderline,
    borderline_rules,
    review_action,
)
from llama_assets.curate.rules import (
    DEFAULT_MARGINS,
    SIGNAL_NAMES,
    QualityThresholds,
    ReviewMargins,
    quality_failures,
)
from llama_assets.curate.schema import ValidatedDocuments
from llama_assets.ingest.schema import split_schema_failures

STAGE = "validated_documents"
SOURCE_OPTED_OUT = "source:use_for_training=false"


@dataclass(frozen=True)
class ContentPolicy:
    """Per-source content rules; the defaults suit English technical prose."""

    allowed_languages: tuple[str, ...] = ("en",)
    declared_language: str = "en"
    """The source's language, for pages too short or code-heavy to judge ("und": none)."""
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    margins: ReviewMargins = DEFAULT_MARGINS
    use_for_index: bool = True
    use_for_training: bool = True


@dataclass
class ValidationOutcome:
    rows: int
    """Documents validated (kept and rejected)."""
    kept: pl.DataFrame
    rejects: list[Reject]
    pii_counts: dict[str, int]
    languages: dict[str, int]
    reject_reasons: dict[str, int]
    review: list[dict] = field(default_factory=list)
    """Borderline documents (see curate/review.py), one row each, with their status."""
    language_sources: dict[str, int] = field(default_factory=dict)
    """Kept documents by where their language came from (model, declared)."""
    uses: dict[str, int] = field(default_factory=dict)
    """Kept documents for the index (``index``) and for training (``training``)."""
    training_exclusions: dict[str, int] = field(default_factory=dict)
    """Kept documents not for training, by reason (each failed rule counted)."""


_STATUS = {("hold", True): "held", ("keep", True): "approved", ("keep", False): "passed"}


def validate_documents(
    raw: pl.DataFrame, policy: ContentPolicy, decisions: dict[str, str] | None = None
) -> ValidationOutcome:
    """Mask, identify and score one part of the raw table, then quarantine or
    keep each document, and decide its uses (see the module docstring).

    Every step runs over the whole part at once (vectorised PII prefilters,
    language identification and quality signals, each equal to its per-document
    function); only the decision per document is a Python loop.
    """
    decisions = decisions or {}
    review: list[dict] = []
    rejects: list[Reject] = []
    reasons: Counter[str] = Counter()
    pii_counts: Counter[str] = Counter()
    exclusions: Counter[str] = Counter()
    masked_counts = mask_pii_batch(raw["text"].to_list())
    # Titles too: they reach the index and search output beside the text.
    titles = raw["title"].to_list()
    masked_titles = mask_pii_batch([title or "" for title in titles])
    for (_, counts), (_, title_counts) in zip(masked_counts, masked_titles, strict=True):
        pii_counts.update(counts)
        pii_counts.update(title_counts)
    masked = [text for text, _ in masked_counts]
    identified = identify_languages(masked, policy.declared_language)
    languages = Counter(d.language for d in identified)
    signals = quality_signals_frame(masked)
    near_any = any_borderline(
        {k: signals[k].to_numpy() for k in SIGNAL_NAMES}, policy.thresholds, policy.margins
    )
    keep = np.zeros(raw.height, dtype=bool)
    for_training = np.zeros(raw.height, dtype=bool)
    exclusion: list[str | None] = [None] * raw.height
    meta = raw.select("doc_id", "source", "batch", "path", "record").iter_rows(named=True)
    for i, (row, doc_signals) in enumerate(zip(meta, signals.iter_rows(named=True), strict=True)):
        language = identified[i].language
        if language not in policy.allowed_languages:
            reasons["language"] += 1
            rejects.append(
                Reject(
                    source=row["source"],
                    batch=row["batch"],
                    path=row["path"],
                    record=row["record"],
                    stage=STAGE,
                    reason=f"language:{language}",
                    excerpt=masked[i][:200],
                )
            )
            continue
        keep[i] = True
        if not policy.use_for_training:
            exclusion[i] = SOURCE_OPTED_OUT
            continue  # nothing to review: the source is never trained on
        failures = quality_failures(doc_signals, policy.thresholds)
        near = (
            borderline_rules(doc_signals, policy.thresholds, policy.margins) if near_any[i] else []
        )
        action = review_action(failures, near, decisions.get(row["doc_id"]))
        if near and action != "fail":
            row = {**row, "words": doc_signals["q_word_count"]}
            review.append(_review_row(row, near, action, failures, policy, masked[i]))
        if action == "keep":
            for_training[i] = True
        elif action == "reject":
            exclusion[i] = REJECTED_REASON
        else:  # fail, or hold: fails narrowly, until a person approves
            exclusion[i] = "quality:" + ",".join(failures)
            exclusions.update(f"quality:{rule}" for rule in failures)
    exclusions.update(e for e in exclusion if e is not None and not e.startswith("quality:"))
    kept = raw.with_columns(
        pl.Series("text", masked, pl.String),
        pl.Series(
            "title",
            [None if t is None else m for t, (m, _) in zip(titles, masked_titles, strict=True)],
            pl.String,
        ),
        _masked_messages(raw),
        pl.Series("language", [d.language for d in identified], pl.String),
        pl.Series("language_score", [float(d.score) for d in identified], pl.Float64),
        pl.Series("language_source", [d.source for d in identified], pl.String),
        pl.Series(
            "pii_total",
            [
                sum(counts.values()) + sum(title_counts.values())
                for (_, counts), (_, title_counts) in zip(masked_counts, masked_titles, strict=True)
            ],
            pl.Int64,
        ),
        pl.Series("for_index", [policy.use_for_index] * raw.height, pl.Boolean),
        pl.Series("for_training", for_training, pl.Boolean),
        pl.Series("training_exclusion", exclusion, pl.String),
        *signals.get_columns(),
    ).filter(pl.Series(keep))
    # The table this stage writes is schema-checked too (layer 1 on its output).
    kept, schema_rejects = split_schema_failures(kept, ValidatedDocuments)
    rejects.extend(schema_rejects)
    if schema_rejects:
        reasons["schema"] += len(schema_rejects)
    return ValidationOutcome(
        raw.height,
        kept,
        rejects,
        dict(pii_counts),
        dict(languages),
        dict(reasons),
        review,
        language_sources=dict(Counter(kept["language_source"].to_list())),
        uses={
            "index": int(kept["for_index"].sum()),
            "training": int(kept["for_training"].sum()),
        },
        training_exclusions=dict(exclusions),
    )


def _review_row(
    row: dict, near: list, action: str, failures: list[str], policy: ContentPolicy, text: str
) -> dict:
    """The review-queue entry of a borderline document: its closest rule, and all."""
    closest = min(near, key=lambda b: abs(b.distance))
    return {
        **row,
        "words": float(row["words"]),
        "status": "rejected"
        if action == "reject"
        else _STATUS.get((action, bool(failures)), action),
        "rule": closest.rule,
        "signal": closest.signal,
        "value": closest.value,
        "threshold": closest.threshold,
        "distance": closest.distance,
        "margin": float(getattr(policy.margins, closest.rule)),
        "rules": ",".join(b.rule for b in near),
        "failed_rules": ",".join(failures),
        "text": text,
    }


def _masked_messages(raw: pl.DataFrame) -> pl.Series:
    """Instruction records' messages with every message masked too (their PII is
    counted once, in the text)."""
    if "messages" not in raw.columns:
        return pl.Series("messages", [None] * raw.height, pl.String)
    return pl.Series(
        "messages",
        [
            None
            if messages is None
            else json.dumps(
                [{**m, "content": mask_pii(m["content"])[0]} for m in json.loads(messages)],
                ensure_ascii=False,
            )
            for messages in raw["messages"].to_list()
        ],
        pl.String,
    )
