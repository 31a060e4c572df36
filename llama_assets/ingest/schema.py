"""Layer 1 of data validation: the schema of the raw documents table (pandera,
polars), and the helpers every stage's table schemas use.

A table's schema is declared once, as a pandera model; its column names and
dtypes, in order, are derived from the model (`column_dtypes`), so the model
and the frames written cannot disagree. The tables curation writes (validated
documents, clean shards, the review queue) are declared in curate/schema.py.

`split_schema_failures` turns row-level violations into quarantined rejects
instead of failing the whole batch; a table built from rows that already
passed is checked with `Model.validate`, so a violation there is a bug and
fails the asset.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from llama_assets.base.rejects import Reject, make_excerpt
from llama_assets.ingest.readers import SUPPORTED_FORMATS, Document

STAGE = "schema"


class SchemaFrameError(ValueError):
    """The frame as a whole does not fit the model (missing column, wrong dtype)."""


def column_dtypes(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """The columns `model` declares, in order, with their polars dtypes: what a
    frame of the table is built with (``pl.DataFrame(..., schema=...)``)."""
    return {name: column.dtype.type for name, column in model.to_schema().columns.items()}


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


RAW_SCHEMA = column_dtypes(RawDocuments)
"""Column names and dtypes of the raw documents table, in order."""


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
