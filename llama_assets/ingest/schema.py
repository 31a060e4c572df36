"""Layer 1 of data validation: the schema of every table the data stage writes
(pandera, polars).

The raw table is what the readers produced; the validated table adds what
curation measured (language, PII counts, quality signals); the clean shards are
what flows downstream; the review tables are what a person reads. Declaring
them as pandera models gives one place that says what a column must hold. For
the raw and validated tables, `split_schema_failures` turns row-level
violations into quarantined rejects instead of failing the whole batch; the
clean shards and review tables are built from rows that already passed, so a
violation there is a bug and fails the asset (`Model.validate` raises).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from llama_assets.base.rejects import Reject, make_excerpt
from llama_assets.curate.quality import SIGNAL_NAMES
from llama_assets.ingest.readers import SUPPORTED_FORMATS, Document

STAGE = "schema"

RAW_SCHEMA: dict[str, type[pl.DataType]] = {
    "doc_id": pl.String,
    "source": pl.String,
    "batch": pl.String,
    "path": pl.String,
    "record": pl.Int64,
    "title": pl.String,
    "text": pl.String,
    "format": pl.String,
    "messages": pl.String,
}
"""Column names and dtypes of the raw documents table, in order."""


class SchemaFrameError(ValueError):
    """The frame as a whole does not fit the model (missing column, wrong dtype)."""


class RawDocuments(pa.DataFrameModel):
    """Documents as read from a landing batch."""

    doc_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    source: str = pa.Field(str_length={"min_value": 1})
    batch: str = pa.Field(str_length={"min_value": 1})
    path: str = pa.Field(str_length={"min_value": 1})
    record: pl.Int64 = pa.Field(ge=0)
    title: str = pa.Field(nullable=True)
    text: str
    format: str = pa.Field(isin=list(SUPPORTED_FORMATS))
    messages: str = pa.Field(nullable=True)
    """Instruction (SFT) records: the message list as JSON; null for plain documents."""

    @pa.check("text", name="not_blank")
    def text_not_blank(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Text must hold something other than whitespace."""
        return data.lazyframe.select(pl.col(data.key).str.strip_chars().str.len_chars() > 0)

    class Config:
        strict = True


class ValidatedDocuments(RawDocuments):
    """Raw documents plus language, PII count and quality signals.

    Not strict: assets may carry further columns (e.g. review flags) along.
    """

    language: str = pa.Field(str_matches=r"^[a-z]{2,3}$")
    language_score: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    pii_total: pl.Int64 = pa.Field(ge=0)
    q_word_count: float = pa.Field(ge=0)
    q_mean_word_length: float = pa.Field(ge=0)
    q_hash_word_ratio: float = pa.Field(ge=0)
    q_ellipsis_word_ratio: float = pa.Field(ge=0)
    q_bullet_line_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_ellipsis_line_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_alpha_word_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_stop_word_count: float = pa.Field(ge=0)
    q_terminal_punct_line_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_javascript_line_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_lorem_ipsum: float = pa.Field(isin=[0.0, 1.0])
    q_curly_brace: float = pa.Field(isin=[0.0, 1.0])
    q_duplicate_line_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_duplicate_line_char_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})
    q_short_line_fraction: float = pa.Field(in_range={"min_value": 0.0, "max_value": 1.0})

    class Config:
        strict = False


VALIDATED_SCHEMA: dict[str, type[pl.DataType]] = {
    **RAW_SCHEMA,
    "language": pl.String,
    "language_score": pl.Float64,
    "pii_total": pl.Int64,
    **dict.fromkeys(SIGNAL_NAMES, pl.Float64),
}
"""Column names and dtypes the validated model requires, in order."""


def documents_frame(docs: Sequence[Document]) -> pl.DataFrame:
    """The raw table of `docs`, with explicit dtypes (also for no documents)."""
    columns: dict[str, list[object]] = {name: [] for name in RAW_SCHEMA}
    for doc in docs:
        for name in RAW_SCHEMA:
            columns[name].append(getattr(doc, name))
    return pl.DataFrame(columns, schema=RAW_SCHEMA)


def split_schema_failures(
    df: pl.DataFrame, model: type[pa.DataFrameModel]
) -> tuple[pl.DataFrame, list[Reject]]:
    """Rows of `df` that pass `model`, and a Reject for each row that does not.

    Validation is lazy (all checks run), so a row failing several checks gets
    one Reject naming each `column:check`. Rejects are ordered by row. Raises
    SchemaFrameError when the frame itself is wrong (missing or unexpected
    column, wrong dtype), since no row can then be judged.
    """
    try:
        model.validate(df, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return df, []

    frame_level = cases.filter(pl.col("index").is_null())
    if frame_level.height:
        problems = "; ".join(
            f"{row['column']}: {row['check']} ({row['failure_case']})"
            for row in frame_level.iter_rows(named=True)
        )
        raise SchemaFrameError(f"frame does not match {model.__name__}: {problems}")

    reasons: dict[int, list[str]] = {}
    for row in cases.sort("index").iter_rows(named=True):
        reason = f"{row['column']}:{row['check']}"
        found = reasons.setdefault(int(row["index"]), [])
        if reason not in found:
            found.append(reason)

    failing = sorted(reasons)
    numbered = df.with_row_index("__row")
    is_failing = pl.col("__row").is_in(failing)
    rejects = []
    for row in numbered.filter(is_failing).iter_rows(named=True):
        index = row.pop("__row")
        record = row.get("record")
        rejects.append(
            Reject(
                source=str(row.get("source") or ""),
                batch=str(row.get("batch") or ""),
                path=str(row.get("path") or ""),
                record=record if isinstance(record, int) else None,
                stage=STAGE,
                reason="; ".join(reasons[index]),
                excerpt=make_excerpt(row.get("text") if "text" in row else repr(row)),
            )
        )
    return numbered.filter(~is_failing).drop("__row"), rejects


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

    @pa.check("text", name="not_blank")
    def text_not_blank(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).str.strip_chars().str.len_chars() > 0)

    class Config:
        strict = True


CLEAN_COLUMNS = ["doc_id", "source", "batch", "path", "title", "text", "language", "messages"]
"""The clean shards' columns, in order (`CleanShards`)."""


class ReviewCandidates(pa.DataFrameModel):
    """Borderline documents, each with its closest rule (curate/review.py)."""

    doc_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    source: str
    batch: str
    path: str
    record: pl.Int64 = pa.Field(ge=0)
    status: str = pa.Field(isin=["held", "passed", "approved", "rejected"])
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


class ReviewQueue(ReviewCandidates):
    """The review queue a person reads: candidates plus the decision on file."""

    decision: str = pa.Field(nullable=True, isin=["approve", "reject"])
