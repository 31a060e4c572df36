"""validate_documents over a part: what is masked, identified, kept and decided."""

from __future__ import annotations

from llama_assets.curate.validate import ContentPolicy, validate_documents
from llama_assets.ingest.readers import Document
from llama_assets.ingest.schema import documents_frame
from tests.landing import topic


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
