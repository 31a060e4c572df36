"""Layer 2 over a batch: PII masking, language identification, quality scores.

Masking (curate/pii.py: text, title and messages) happens first, so that
everything downstream (the language and quality signals, the shards, the
embeddings, the index, training) only ever sees masked text. A document that
fails a rule is quarantined with that rule's name.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from llama_assets.base.rejects import Reject
from llama_assets.curate.language import detect_languages
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


@dataclass(frozen=True)
class ContentPolicy:
    """Per-source content rules; the defaults suit English technical prose."""

    allowed_languages: tuple[str, ...] = ("en",)
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    margins: ReviewMargins = DEFAULT_MARGINS


@dataclass
class ValidationOutcome:
    rows: int
    """Documents validated (kept, rejected and held)."""
    kept: pl.DataFrame
    rejects: list[Reject]
    pii_counts: dict[str, int]
    languages: dict[str, int]
    reject_reasons: dict[str, int]
    review: list[dict] = field(default_factory=list)
    """Borderline documents (see curate/review.py), one row each, with their status."""


_STATUS = {("hold", True): "held", ("keep", True): "approved", ("keep", False): "passed"}


def validate_documents(
    raw: pl.DataFrame, policy: ContentPolicy, decisions: dict[str, str] | None = None
) -> ValidationOutcome:
    """Mask, identify and score one part of the raw table, then keep, quarantine
    or hold each document.

    Every step runs over the whole part at once (vectorised PII prefilters,
    language identification and quality signals, each equal to its per-document
    function); only the decision per document is a Python loop.
    """
    decisions = decisions or {}
    review: list[dict] = []
    rejects: list[Reject] = []
    reasons: Counter[str] = Counter()
    pii_counts: Counter[str] = Counter()
    masked_counts = mask_pii_batch(raw["text"].to_list())
    # Titles too: they reach the index and search output beside the text.
    titles = raw["title"].to_list()
    masked_titles = mask_pii_batch([title or "" for title in titles])
    for (_, counts), (_, title_counts) in zip(masked_counts, masked_titles, strict=True):
        pii_counts.update(counts)
        pii_counts.update(title_counts)
    masked = [text for text, _ in masked_counts]
    identified = detect_languages(masked)
    languages = Counter(language for language, _ in identified)
    signals = quality_signals_frame(masked)
    near_any = any_borderline(
        {k: signals[k].to_numpy() for k in SIGNAL_NAMES}, policy.thresholds, policy.margins
    )
    keep = np.zeros(raw.height, dtype=bool)
    meta = raw.select("doc_id", "source", "batch", "path", "record").iter_rows(named=True)
    for i, (row, doc_signals) in enumerate(zip(meta, signals.iter_rows(named=True), strict=True)):
        language = identified[i][0]
        reason = None
        if language not in policy.allowed_languages:
            reason = f"language:{language}"
        else:
            failures = quality_failures(doc_signals, policy.thresholds)
            near = (
                borderline_rules(doc_signals, policy.thresholds, policy.margins)
                if near_any[i]
                else []
            )
            action = review_action(failures, near, decisions.get(row["doc_id"]))
            if action == "fail":
                reason = "quality:" + ",".join(failures)
            elif action == "reject":
                reason = REJECTED_REASON
            if near and action != "fail":
                review.append(_review_row(row, near, action, failures, policy, masked[i]))
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
                    excerpt=masked[i][:200],
                )
            )
            continue
        keep[i] = True
    kept = raw.with_columns(
        pl.Series("text", masked, pl.String),
        pl.Series(
            "title",
            [None if t is None else m for t, (m, _) in zip(titles, masked_titles, strict=True)],
            pl.String,
        ),
        _masked_messages(raw),
        pl.Series("language", [language for language, _ in identified], pl.String),
        pl.Series("language_score", [float(score) for _, score in identified], pl.Float64),
        pl.Series(
            "pii_total",
            [
                sum(counts.values()) + sum(title_counts.values())
                for (_, counts), (_, title_counts) in zip(masked_counts, masked_titles, strict=True)
            ],
            pl.Int64,
        ),
        *signals.get_columns(),
    ).filter(pl.Series(keep))
    # The table this stage writes is schema-checked too (layer 1 on its output).
    kept, schema_rejects = split_schema_failures(kept, ValidatedDocuments)
    rejects.extend(schema_rejects)
    if schema_rejects:
        reasons["schema"] += len(schema_rejects)
    return ValidationOutcome(
        raw.height, kept, rejects, dict(pii_counts), dict(languages), dict(reasons), review
    )


def _review_row(
    row: dict, near: list, action: str, failures: list[str], policy: ContentPolicy, text: str
) -> dict:
    """The review-queue entry of a borderline document: its closest rule, and all."""
    closest = min(near, key=lambda b: abs(b.distance))
    return {
        **row,
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
