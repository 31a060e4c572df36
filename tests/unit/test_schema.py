"""Layer-1 schema: row failures become rejects, frame failures raise."""

from __future__ import annotations

import polars as pl
import pytest

from llama_assets.base.rejects import Reject
from llama_assets.curate.rules import SIGNAL_NAMES
from llama_assets.curate.schema import VALIDATED_SCHEMA, ValidatedDocuments
from llama_assets.ingest.readers import Document
from llama_assets.ingest.schema import (
    RAW_SCHEMA,
    RawDocuments,
    SchemaFrameError,
    documents_frame,
    split_schema_failures,
)
from tests.quality_reference import quality_signals

RAW_COLUMNS = {
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
"""The raw table's columns and dtypes, in order: a contract of the shard files."""

SIGNAL_COLUMNS = [
    "q_word_count",
    "q_mean_word_length",
    "q_hash_word_ratio",
    "q_ellipsis_word_ratio",
    "q_bullet_line_fraction",
    "q_ellipsis_line_fraction",
    "q_alpha_word_fraction",
    "q_stop_word_count",
    "q_terminal_punct_line_fraction",
    "q_javascript_line_fraction",
    "q_lorem_ipsum",
    "q_curly_brace",
    "q_duplicate_line_fraction",
    "q_duplicate_line_char_fraction",
    "q_short_line_fraction",
]
"""The validated table's signal columns, in order."""


def _doc(doc_id: str, record: int = 0, text: str = "some text", fmt: str = "jsonl") -> Document:
    return Document(doc_id, "web", "b1", "f.jsonl", record, None, text, fmt)


def test_documents_frame_dtypes_including_empty() -> None:
    assert pl.Schema(RAW_SCHEMA) == pl.Schema(RAW_COLUMNS)
    df = documents_frame([_doc("a"), _doc("b", 1, "other")])
    assert df.schema == pl.Schema(RAW_COLUMNS)
    assert df["doc_id"].to_list() == ["a", "b"]
    assert df["record"].to_list() == [0, 1]
    empty = documents_frame([])
    assert empty.height == 0
    assert empty.schema == pl.Schema(RAW_COLUMNS)
    assert split_schema_failures(empty, RawDocuments)[0].height == 0


def test_row_failures_become_rejects() -> None:
    df = documents_frame(
        [
            _doc("a"),
            _doc("b", 1, "  \n "),
            _doc("c", -2, "fine", fmt="exe"),
            _doc("d", 3, "also fine"),
            _doc("d", 4, "duplicate id"),
        ]
    )
    passing, rejects = split_schema_failures(df, RawDocuments)
    assert passing["doc_id"].to_list() == ["a"]
    formats = "['jsonl', 'json', 'parquet', 'csv', 'txt', 'md', 'rst', 'html', 'htm']"
    assert rejects == [
        Reject("web", "b1", "f.jsonl", 1, "schema", "text:not_blank", "  \\n "),
        Reject(
            "web",
            "b1",
            "f.jsonl",
            -2,
            "schema",
            f"record:greater_than_or_equal_to(0); format:isin({formats})",
            "fine",
        ),
        Reject("web", "b1", "f.jsonl", 3, "schema", "doc_id:field_uniqueness", "also fine"),
        Reject("web", "b1", "f.jsonl", 4, "schema", "doc_id:field_uniqueness", "duplicate id"),
    ]


def test_valid_frame_passes_unchanged() -> None:
    df = documents_frame([_doc("a"), _doc("b", 1)])
    passing, rejects = split_schema_failures(df, RawDocuments)
    assert rejects == []
    assert passing.equals(df)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop("format"), "column_in_dataframe"),
        (lambda df: df.with_columns(pl.col("record").cast(pl.Int32)), "record: dtype('Int64')"),
        (lambda df: df.with_columns(extra=pl.lit(1)), "column_in_schema"),
    ],
)
def test_frame_failures_raise(change, message: str) -> None:
    df = change(documents_frame([_doc("a")]))
    with pytest.raises(SchemaFrameError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_schema_failures(df, RawDocuments)


def _validated(rows: int = 2) -> pl.DataFrame:
    raw = documents_frame([_doc(f"id{i}", i, "The text of the document.") for i in range(rows)])
    signals = quality_signals("The text of the document.")
    return raw.with_columns(
        language=pl.lit("en"),
        language_score=pl.lit(0.9),
        language_source=pl.lit("model"),
        pii_total=pl.lit(0, dtype=pl.Int64),
        for_index=pl.lit(True),
        for_training=pl.lit(True),
        training_exclusion=pl.lit(None, dtype=pl.String),
        **{name: pl.lit(value, dtype=pl.Float64) for name, value in signals.items()},
    )


def test_validated_model() -> None:
    df = _validated()
    assert df.schema == pl.Schema(VALIDATED_SCHEMA)
    assert dict(VALIDATED_SCHEMA) == {
        **RAW_COLUMNS,
        "language": pl.String,
        "language_score": pl.Float64,
        "language_source": pl.String,
        "pii_total": pl.Int64,
        "for_index": pl.Boolean,
        "for_training": pl.Boolean,
        "training_exclusion": pl.String,
        **dict.fromkeys(SIGNAL_COLUMNS, pl.Float64),
    }
    assert list(SIGNAL_NAMES) == SIGNAL_COLUMNS
    passing, rejects = split_schema_failures(df, ValidatedDocuments)
    assert (passing.height, rejects) == (2, [])
    # Extra columns are allowed in the validated table.
    assert split_schema_failures(df.with_columns(review=pl.lit(True)), ValidatedDocuments)[1] == []

    bad = df.with_columns(
        language_score=pl.Series([0.5, 1.5]),
        pii_total=pl.Series([-1, 0]),
        language=pl.Series(["EN!", "de"]),
        language_source=pl.Series(["model", "guessed"]),
    )
    passing, rejects = split_schema_failures(bad, ValidatedDocuments)
    assert passing.height == 0
    assert [(r.record, r.reason) for r in rejects] == [
        (0, "language:str_matches('^[a-z]{2,3}$'); pii_total:greater_than_or_equal_to(0)"),
        (1, "language_score:in_range(0.0, 1.0); language_source:isin(['model', 'declared'])"),
    ]


def test_validated_model_requires_quality_columns() -> None:
    with pytest.raises(SchemaFrameError, match="q_curly_brace"):
        split_schema_failures(_validated().drop("q_curly_brace"), ValidatedDocuments)


def _clean(**overrides) -> pl.DataFrame:
    row = {
        "doc_id": "a",
        "source": "web",
        "batch": "b1",
        "path": "f.jsonl",
        "title": None,
        "text": "some text",
        "language": "en",
        "messages": None,
        "for_index": True,
        "for_training": False,
        "training_exclusion": "quality:gopher_min_words",
    }
    return pl.DataFrame([row, {**row, "doc_id": "b"}, {**row, "doc_id": "c", **overrides}])


def test_clean_shards_model_fails_on_any_bad_row() -> None:
    from pandera.errors import SchemaError

    from llama_assets.curate.schema import CLEAN_COLUMNS, CleanShards

    good = _clean().cast({"title": pl.String, "messages": pl.String})
    expected = ["doc_id", "source", "batch", "path", "title", "text", "language", "messages"]
    expected += ["for_index", "for_training", "training_exclusion"]
    assert expected == CLEAN_COLUMNS
    assert CleanShards.validate(good).columns == expected
    for bad in (
        _clean(text="  "),
        _clean(doc_id="a"),
        _clean(language="english"),
        _clean(path=""),
    ):
        with pytest.raises(SchemaError):
            CleanShards.validate(bad.cast({"title": pl.String, "messages": pl.String}))
    with pytest.raises(SchemaError):  # strict: no stray columns downstream
        CleanShards.validate(good.with_columns(extra=pl.lit(1)))


def test_review_queue_model() -> None:
    from pandera.errors import SchemaError

    from llama_assets.curate.schema import REVIEW_SCHEMA, ReviewCandidates, ReviewQueue

    row = {
        "doc_id": "a",
        "source": "web",
        "batch": "b1",
        "path": "f.jsonl",
        "record": 0,
        "words": 48.0,
        "status": "held",
        "rule": "gopher_min_words",
        "signal": "q_word_count",
        "value": 48.0,
        "threshold": 50.0,
        "distance": -2.0,
        "margin": 5.0,
        "rules": "gopher_min_words",
        "failed_rules": "gopher_min_words",
        "text": "short text",
    }
    candidates = pl.DataFrame([row], schema=REVIEW_SCHEMA)
    ReviewCandidates.validate(candidates)
    ReviewCandidates.validate(pl.DataFrame(schema=REVIEW_SCHEMA))  # nothing borderline
    ReviewQueue.validate(candidates.with_columns(decision=pl.lit("approve")))
    with pytest.raises(SchemaError):
        ReviewCandidates.validate(pl.DataFrame([{**row, "status": "maybe"}], schema=REVIEW_SCHEMA))
    with pytest.raises(SchemaError):
        ReviewQueue.validate(candidates.with_columns(decision=pl.lit("perhaps")))
