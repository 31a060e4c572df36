"""The tables curation writes, one pandera model each: validated documents,
clean shards and the review queue.

Each table is declared once; its column names and dtypes, in order, are derived
from its model (`column_dtypes`, ingest/schema.py). The validated table's
quality-signal columns come from the signal declarations (`SIGNALS`,
curate/rules.py): one Float64 column per signal, checked by its kind. The
validated table is checked row by row (`split_schema_failures` quarantines the
rows that fail); the clean shards and the review tables are built from rows
that already passed, so a violation there is a bug and fails the asset
(`Model.validate` raises).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from llama_assets.curate.language import LANGUAGE_SOURCES
from llama_assets.curate.review import DECISIONS, REVIEW_STATUSES
from llama_assets.curate.rules import SIGNAL_NAMES, SIGNALS, Signal
from llama_assets.ingest.schema import RawDocuments, column_dtypes


def _signal_field(signal: Signal) -> pa.Field:
    """The check of a signal column, by the signal's kind."""
    if signal.kind == "fraction":
        return pa.Field(in_range={"min_value": 0.0, "max_value": 1.0}, description=signal.measures)
    if signal.kind == "flag":
        return pa.Field(isin=[0.0, 1.0], description=signal.measures)
    return pa.Field(ge=0, description=signal.measures)  # count, length, ratio


class _MeasuredDocuments(RawDocuments):
    """Raw documents plus language, PII count and the document's two uses (the
    signal columns follow)."""

    language: str = pa.Field(str_matches=r"^[a-z]{2,3}$")
    language_score: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    language_source: str = pa.Field(isin=list(LANGUAGE_SOURCES))
    """model: identified from the prose; declared: the source's language (a page
    too short or too code-heavy to judge)."""
    pii_total: pl.Int64 = pa.Field(ge=0)
    for_index: bool
    """Reaches the RAG index (unless removed as a duplicate)."""
    for_training: bool
    """Reaches the training dataset: passes the quality rules (or was approved)."""
    training_exclusion: str = pa.Field(nullable=True)
    """Why not for training (curate/validate.py); null when for_training."""

    class Config:
        strict = False


ValidatedDocuments: type[pa.DataFrameModel] = type(
    "ValidatedDocuments",
    (_MeasuredDocuments,),
    {
        "__module__": __name__,
        "__doc__": """Raw documents plus language, PII count and one Float64 column per
    quality signal (`SIGNALS`, in order).

    Not strict: assets may carry further columns (e.g. review flags) along.
    """,
        "__annotations__": dict.fromkeys(SIGNAL_NAMES, float),
        **{signal.name: _signal_field(signal) for signal in SIGNALS},
    },
)

VALIDATED_SCHEMA = column_dtypes(ValidatedDocuments)
"""Column names and dtypes the validated model requires, in order."""


class CleanShards(pa.DataFrameModel):
    """The deduplicated documents every downstream stage reads."""

    doc_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    source: str = pa.Field(str_length={"min_value": 1})
    batch: str = pa.Field(str_length={"min_value": 1})
    path: str = pa.Field(str_length={"min_value": 1})
    title: str = pa.Field(nullable=True)
    text: str
    language: str = pa.Field(str_matches=r"^[a-z]{2,3}$")
    messages: str = pa.Field(nullable=True)
    for_index: bool
    for_training: bool
    training_exclusion: str = pa.Field(nullable=True)

    @pa.check("text", name="not_blank")
    def text_not_blank(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).str.strip_chars().str.len_chars() > 0)

    class Config:
        strict = True


CLEAN_COLUMNS = list(column_dtypes(CleanShards))
"""The clean shards' columns, in order."""


class ReviewCandidates(pa.DataFrameModel):
    """Borderline documents, each with its closest rule (curate/review.py), and
    all of them."""

    doc_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    source: str
    batch: str
    path: str
    record: pl.Int64 = pa.Field(ge=0)
    words: float = pa.Field(ge=0)
    """What is at stake: the document's words (held documents are ordered by it)."""
    status: str = pa.Field(isin=list(REVIEW_STATUSES))
    rule: str = pa.Field(str_length={"min_value": 1})
    signal: str = pa.Field(isin=list(SIGNAL_NAMES))
    value: float
    threshold: float
    distance: float
    margin: float = pa.Field(gt=0)
    rules: str = pa.Field(str_length={"min_value": 1})
    failed_rules: str
    text: str

    class Config:
        strict = True


REVIEW_SCHEMA = column_dtypes(ReviewCandidates)
"""Column names and dtypes of the review candidates, in order."""


class ReviewQueue(ReviewCandidates):
    """The review queue a person reads: candidates plus the decision on file."""

    decision: str = pa.Field(nullable=True, isin=list(DECISIONS))
