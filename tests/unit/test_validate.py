"""validate_documents over a part: what is masked, identified, kept and decided."""

from __future__ import annotations

from llama_assets.curate.validate import SOURCE_OPTED_OUT, ContentPolicy, validate_documents
from llama_assets.ingest.readers import Document
from llama_assets.ingest.schema import documents_frame
from tests.landing import GERMAN, topic


def _doc(record: int, text: str, title: str | None = None, path: str = "docs.jsonl") -> Document:
    return Document(
        doc_id=f"doc{record}",
        source="s",
        batch="b1",
        path=path,
        record=record,
        title=title,
        text=text,
        format="jsonl",
    )


def test_titles_are_masked_and_counted() -> None:
    raw = documents_frame(
        [
            _doc(0, topic(0), "Questions to jane.doe@example.org from 10.20.30.40"),
            _doc(1, topic(1), None),
            _doc(2, topic(2), "The for statement"),
        ]
    )
    outcome = validate_documents(raw, ContentPolicy())
    kept = outcome.kept.sort("record")
    assert kept["title"].to_list() == [
        "Questions to [EMAIL] from [IP_ADDRESS]",
        None,
        "The for statement",
    ]
    assert kept["pii_total"].to_list()[0] == 2
    assert outcome.pii_counts["email"] == 1 and outcome.pii_counts["ip_address"] == 1


def test_quality_decides_training_and_sources_opt_out() -> None:
    short = "This note is far too short to train on, but a reader may search for it."
    raw = documents_frame([_doc(0, topic(0)), _doc(1, short), _doc(2, "Kurz. " + GERMAN)])
    outcome = validate_documents(raw, ContentPolicy())
    kept = outcome.kept.sort("record")
    assert [r.reason for r in outcome.rejects] == ["language:de"]
    assert kept.select("record", "for_index", "for_training").rows() == [
        (0, True, True),
        (1, True, False),
    ]
    assert kept["training_exclusion"][1].startswith("quality:gopher_min_words")
    assert outcome.uses == {"index": 2, "training": 1}
    assert outcome.training_exclusions["quality:gopher_min_words"] == 1
    assert outcome.reject_reasons == {"language": 1}

    opted_out = validate_documents(
        raw, ContentPolicy(use_for_index=False, use_for_training=False)
    ).kept
    assert opted_out.select("for_index", "for_training").rows() == [(False, False)] * 2
    assert set(opted_out["training_exclusion"]) == {SOURCE_OPTED_OUT}


def test_a_page_too_short_to_judge_takes_the_declared_language() -> None:
    raw = documents_frame([_doc(0, "Run the tool to see more.\n\n    $ tool -v\n")])
    english = validate_documents(raw, ContentPolicy())
    assert english.kept.select("language", "language_source").rows() == [("en", "declared")]
    assert english.language_sources == {"declared": 1}
    none_declared = validate_documents(raw, ContentPolicy(declared_language="und"))
    assert [r.reason for r in none_declared.rejects] == ["language:und"]
