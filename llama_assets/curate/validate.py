"""Layer 2 over a batch: PII masking, language identification, quality scores.

Masking happens first, so that everything downstream (the language and quality
signals, the shards, the embeddings, the index, training) only ever sees
masked text. A document that fails a rule is quarantined with that rule's name.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from llama_assets.curate.language import detect_language
from llama_assets.curate.pii import mask_pii
from llama_assets.curate.quality import (
    SIGNAL_NAMES,
    QualityThresholds,
    quality_failures,
    quality_signals,
    quality_signals_batch,
)
from llama_assets.curate.rejects import Reject
from llama_assets.curate.review import (
    DEFAULT_MARGINS,
    REJECTED_REASON,
    ReviewMargins,
    borderline_rules,
    review_action,
)
from llama_assets.ingest.schema import ValidatedDocuments, split_schema_failures

STAGE = "validated_documents"


@dataclass(frozen=True)
class ContentPolicy:
    """Per-source content rules; the defaults suit English technical prose."""

    allowed_languages: tuple[str, ...] = ("en",)
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    margins: ReviewMargins = DEFAULT_MARGINS


@dataclass
class ValidationOutcome:
    kept: pl.DataFrame
    rejects: list[Reject]
    pii_counts: dict[str, int]
    languages: dict[str, int]
    reject_reasons: dict[str, int]
    review: list[dict] = field(default_factory=list)
    """Borderline documents (see curate/review.py), one row each, with their status."""


REVIEW_SCHEMA = {
    "doc_id": pl.String,
    "source": pl.String,
    "batch": pl.String,
    "path": pl.String,
    "record": pl.Int64,
    "status": pl.String,
    "rule": pl.String,
    "signal": pl.String,
    "value": pl.Float64,
    "threshold": pl.Float64,
    "distance": pl.Float64,
    "margin": pl.Float64,
    "rules": pl.String,
    "failed_rules": pl.String,
    "text": pl.String,
}
"""Columns of the review queue: the closest borderline rule, and all of them.
status: held (fails narrowly, waits), passed (passes narrowly, flows on),
approved (held, approved: flows on), rejected (quarantined review:rejected)."""

_STATUS = {("hold", True): "held", ("keep", True): "approved", ("keep", False): "passed"}


def validate_documents(
    raw: pl.DataFrame, policy: ContentPolicy, decisions: dict[str, str] | None = None
) -> ValidationOutcome:
    decisions = decisions or {}
    review: list[dict] = []
    kept_rows: list[dict] = []
    rejects: list[Reject] = []
    pii_counts: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rows = list(raw.iter_rows(named=True))
    # Masking comes first; the quality signals of the whole part are then computed
    # at once (vectorised, equal to `quality_signals` of each masked text).
    masked_rows = [mask_pii(row["text"]) for row in rows]
    part_signals = quality_signals_batch([masked for masked, _ in masked_rows])
    for i, row in enumerate(rows):
        masked, counts = masked_rows[i]
        pii_counts.update(counts)
        language, language_score = detect_language(masked)
        languages[language] += 1
        signals = {k: part_signals[k][i] for k in SIGNAL_NAMES}
        reason = None
        if language not in policy.allowed_languages:
            reason = f"language:{language}"
        else:
            failures = quality_failures(signals, policy.thresholds)
            near = borderline_rules(signals, policy.thresholds, policy.margins)
            action = review_action(failures, near, decisions.get(row["doc_id"]))
            if action == "fail":
                reason = "quality:" + ",".join(failures)
            elif action == "reject":
                reason = REJECTED_REASON
            if near and action != "fail":
                closest = min(near, key=lambda b: abs(b.distance))
                review.append(
                    {
                        **{k: row[k] for k in ("doc_id", "source", "batch", "path", "record")},
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
                        "text": masked,
                    }
                )
            if action == "hold":
                continue  # in the review queue until a person decides
        if reason:
            reasons[reason.split(":")[0]] += 1
            rejects.append(
                Reject(
                    source=row["source"],
                    batch=row["batch"],
                    path=row["path"],
                    record=row["record"],
                    stage=STAGE,
                    reason=reason,
                    excerpt=masked[:200],
                )
            )
            continue
        messages = row.get("messages")
        if messages is not None:
            # Instruction records: every message is masked too (counted once, in text).
            messages = json.dumps(
                [{**m, "content": mask_pii(m["content"])[0]} for m in json.loads(messages)],
                ensure_ascii=False,
            )
        kept_rows.append(
            {
                **row,
                "messages": messages,
                "text": masked,
                "language": language,
                "language_score": float(language_score),
                "pii_total": int(sum(counts.values())),
                **{k: float(v) for k, v in signals.items()},
            }
        )
    kept = (
        # Raw columns keep their dtypes even when a part holds only nulls in one.
        pl.DataFrame(kept_rows, infer_schema_length=None).cast(
            {**dict(raw.schema), "messages": pl.String}
        )
        if kept_rows
        else _empty_like(raw)
    )
    # The table this stage writes is schema-checked too (layer 1 on its output).
    kept, schema_rejects = split_schema_failures(kept, ValidatedDocuments)
    rejects.extend(schema_rejects)
    if schema_rejects:
        reasons["schema"] += len(schema_rejects)
    return ValidationOutcome(
        kept, rejects, dict(pii_counts), dict(languages), dict(reasons), review
    )


def _empty_like(raw: pl.DataFrame) -> pl.DataFrame:
    signals = quality_signals("")
    return raw.clear().with_columns(
        pl.lit(None, pl.String).alias("language"),
        pl.lit(None, pl.Float64).alias("language_score"),
        pl.lit(None, pl.Int64).alias("pii_total"),
        *[pl.lit(None, pl.Float64).alias(k) for k in signals],
    )
