"""A documentation set through the real graph, raw files to the training dataset:
nothing English is lost (reST and Markdown pages of code and tables, HTML, short
quotations reach the index), only what passes the quality rules is trained on,
and planted personal data and secrets appear nowhere past the validated stage:
not in the shards, the index, the training data, the review queue, quarantine,
nor the Dagster event log."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl

from llama_assets.base.shards import scan_shards
from llama_assets.ingest.readers import make_doc_id
from llama_assets.jobs import BATCH_ASSETS
from llama_assets.partitions import BATCHES
from llama_assets.training.assets import training_dataset
from tests.landing import jsonl, land, part, read_jsonl, topic

KEY = "manual/v1"
DOCS = Path(__file__).parents[1] / "fixtures" / "docs_corpus"

PLANTED = {
    # In deploy.html: its <title>, prose, <pre> and a connection string.
    "ops.lead@example.com",
    "10.20.30.40",
    "AKIAZ7QUIT2EXAMPLE9X",
    "xoxb-912345678901-9123456789012-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1",
    "Tr0ub4dor3xyz",
    "Winter2024!",
    # In the records below: titles and the text of a page that is trained on.
    "jane.doe@example.org",
    "2a00:1450:4001:82b::200e",
    "ghp_Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7A",
    "sk-proj-Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6",
    "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0buXYZ",
    "93.184.216.34",
}
KEY_BLOCK = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0buXYZ\n"
    "-----END RSA PRIVATE KEY-----"
)
RECORDS = [
    {  # 0: a long page, trained on, with secrets in its text and PII in its title
        "title": "Reading files - questions to jane.doe@example.org",
        "text": topic(1) + "\n\nThe mirror at 2a00:1450:4001:82b::200e uses the token "
        "ghp_Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7A and the key "
        "sk-proj-Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6.\n\n" + KEY_BLOCK,
    },
    {"title": "Uptime from 93.184.216.34", "text": topic(2)},  # 1: PII in the title only
    {"title": "A short quotation", "text": "Now is better than never."},  # 2
]


def _strings(frame: pl.DataFrame) -> str:
    return "\n".join(
        "\n".join(v for v in frame[c].to_list() if v)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    )


def _written_past_validation(root: Path) -> dict[str, str]:
    """The text of every file written from the validated stage on, by path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith(("landing/", "lancedb/", "cache/")):
            continue
        if "raw_documents" in rel:  # the raw stage, before masking
            continue
        if path.suffix == ".parquet":
            out[rel] = _strings(pl.read_parquet(path))
        elif path.suffix in (".json", ".jsonl", ".csv", ".md", ".txt"):
            out[rel] = path.read_text(encoding="utf-8", errors="replace")
    return out


def test_documentation_is_kept_and_nothing_personal_is_written(layout, instance, resources):
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.iterdir())}
    files["records.jsonl"] = jsonl(*RECORDS)
    files["tutorial.md"] = topic(0)  # a long page that passes every quality rule
    land(layout, KEY, files)
    raw_text = "\n".join(files.values())
    assert all(value in raw_text for value in PLANTED)
    # A source that opts out of the index: trained on, never searchable.
    layout.sources_config.parent.mkdir(parents=True, exist_ok=True)
    layout.sources_config.write_text("[sources.private]\nuse_for_index = false\n")
    land(layout, "private/p1", {"notes.md": topic(3)})
    instance.add_dynamic_partitions(BATCHES, [KEY, "private/p1"])
    for key in (KEY, "private/p1"):
        assert dg.materialize(
            BATCH_ASSETS, instance=instance, resources=resources, partition_key=key
        )
    assert dg.materialize([training_dataset], instance=instance, resources=resources)
    private = make_doc_id("private", "p1", "notes.md", 0)

    def doc(path: str, record: int = 0) -> str:
        return make_doc_id("manual", "v1", path, record)

    english = {doc(name) for name in files if name not in ("german.md", "records.jsonl")}
    english |= {doc("records.jsonl", i) for i in range(len(RECORDS))}

    # Only the German page is quarantined; every English page, however short or
    # code-heavy, reaches the index.
    quarantined = read_jsonl(layout.quarantine(KEY) / "validated_documents.jsonl")
    assert [(r["path"], r["reason"]) for r in quarantined] == [("german.md", "language:de")]
    chunks = lancedb.connect(str(layout.lancedb)).open_table("chunks").to_polars().collect()
    assert set(chunks["doc_id"]) == english
    shards = pl.read_parquet(part(layout.shards(KEY)))
    assert shards["for_index"].all()

    # Only what passes the quality rules is trained on.
    trained = {
        d
        for split in ("train", "validation")
        for d in scan_shards(layout.training_dataset / split).collect()["doc_id"]
    }
    assert trained == {
        doc("tutorial.md"),
        doc("records.jsonl", 0),
        doc("records.jsonl", 1),
        private,
    }
    assert private not in set(chunks["doc_id"])
    trained.discard(private)
    assert trained == set(shards.filter("for_training")["doc_id"])
    not_trained = shards.filter(~pl.col("for_training"))
    assert not_trained["training_exclusion"].str.starts_with("quality:").all()

    # The decisions are counted in metadata.
    def metadata(name: str) -> dict:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    def for_batch(name: str, key: str) -> dict:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[key]), limit=1
        ).records
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}

    validated = for_batch("validated_documents", KEY)
    assert (validated["for_index"], validated["for_training"]) == (len(english), 3)
    assert validated["not_for_training"] == len(english) - 3
    assert validated["language_sources"]["declared"] >= 1
    assert for_batch("clean_shards", KEY)["for_training"] == 3
    assert for_batch("chunks", KEY)["documents"] == len(english)
    assert for_batch("chunks", "private/p1")["documents_not_indexed"] == 1
    assert metadata("training_dataset")["clean_documents_not_trained"] == len(english) - 3

    # Masked everywhere past the validated stage: titles too (in the index, whose
    # title column search prints), the event log included.
    assert "Reading files - questions to [EMAIL]" in set(chunks["title"])
    written = _written_past_validation(layout.root.local)
    assert any(rel.startswith("shards/") for rel in written)
    assert any(rel.startswith("datasets/training/") for rel in written)
    assert any(rel.startswith("review/") for rel in written)
    written["lancedb chunks"] = _strings(chunks)
    events = "\n".join(
        str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id)
    )
    assert "ASSET_MATERIALIZATION" in events
    written["event log"] = events + json.dumps(validated, default=str)
    leaks = {
        (value, where) for value in PLANTED for where, text in written.items() if value in text
    }
    assert leaks == set()
