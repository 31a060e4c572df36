"""Item 8: one planted batch through the real curation assets; assert exactly what
is quarantined (with which reason), masked, removed as a duplicate, and kept."""

from __future__ import annotations

import json
import random

import dagster as dg
import polars as pl

from llama_assets.curate.assets import (
    clean_shards,
    corpus_profile,
    review_queue,
    validated_documents,
)
from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.readers import make_doc_id
from llama_assets.partitions import BATCHES
from tests.landing import GERMAN, jsonl, land, part, read_jsonl, topic

KEY = "planted/b1"
FRENCH = (
    "La fonction renvoie la liste des noms dans la portée locale courante. Si un argument "
    "est donné, elle essaie de renvoyer la liste des attributs valides pour cet objet. Le "
    "résultat n'est pas toujours complet, et la liste est triée par ordre alphabétique. Les "
    "noms sont fournis par la méthode de l'objet, sinon par le dictionnaire de sa classe."
)
PII = {
    "email": "jane.doe@example.org",
    "phone": "+44 20 7946 0958",
    "credit_card": "4111 1111 1111 1111",
    "ip_address": "93.184.216.34",
    "iban": "DE89370400440532013000",
    "national_id": "123-45-6789",
    "secret": "AKIAIOSFODNN7EXAMPLE",
}


def replace_words(text: str, every: int, seed: int) -> str:
    words = text.split(" ")
    rng = random.Random(seed)
    for i in rng.sample(range(len(words)), len(words) // every):
        words[i] = f"planted{i}"
    return " ".join(words)


def doc(record: int) -> str:
    return make_doc_id("planted", "b1", "records.jsonl", record)


def test_planted_corpus_removes_masks_and_quarantines_exactly(layout, instance, resources):
    layout.sources_config.parent.mkdir(parents=True, exist_ok=True)
    layout.sources_config.write_text("[sources.planted]\nmax_reject_rate = 0.9\n")
    pii_line = "Contact: " + ", ".join(f"{kind} {value}" for kind, value in PII.items()) + "."
    records = [
        {"text": topic(0)},  # 0 kept: the original of an exact duplicate
        {"text": topic(0)},  # 1 exact duplicate
        {"text": topic(1)},  # 2 near duplicates: 1 word in 100 replaced
        {"text": replace_words(topic(1), 100, 1)},  # 3
        {"text": topic(2)},  # 4 different: 1 word in 8 replaced -> both kept
        {"text": replace_words(topic(2), 8, 2)},  # 5
        {"text": topic(3) + "\n\n" + pii_line},  # 6 PII of every type, masked
        {"text": GERMAN},  # 7 language:de
        {"text": FRENCH},  # 8 language:fr
        '{"text": "unterminated',  # 9 invalid_json
        {"title": "no text"},  # 10 missing_text
        {"text": "   "},  # 11 empty_text
        {"text": 42},  # 12 wrong_type
        {"text": "word " * 250_000},  # 13 too_large (over 1M characters)
    ]
    land(
        layout,
        KEY,
        {
            "records.jsonl": jsonl(*records),
            # Line 0 is cp1252 (0xE9 "é"): decoded by the fallback. Line 1 holds bytes
            # of no supported encoding (0x81, 0x8D): quarantined as invalid_utf8.
            "latin.jsonl": json.dumps({"text": topic(4) + " CAFE"})
            .replace("CAFE", "caf@ cr@me")
            .encode()
            .replace(b"@", b"\xe9")
            + b"\n"
            + json.dumps({"text": topic(5) + " BAD"}).encode().replace(b"BAD", b"\x81\x8d")
            + b"\n",
            "junk.txt": b"\x00\x01\x02\x03binary junk\x00" * 20,
        },
    )
    instance.add_dynamic_partitions(BATCHES, [KEY])
    for asset in (raw_documents, validated_documents, review_queue, corpus_profile, clean_shards):
        assert dg.materialize([asset], instance=instance, resources=resources, partition_key=KEY)

    raw = read_jsonl(layout.quarantine(KEY) / "raw_documents.jsonl")
    assert sorted((r["path"], r["record"], r["reason"]) for r in raw) == [
        ("junk.txt", None, "binary_content"),
        ("latin.jsonl", 1, "invalid_utf8"),
        ("records.jsonl", 9, "invalid_json"),
        ("records.jsonl", 10, "missing_text"),
        ("records.jsonl", 11, "empty_text"),
        ("records.jsonl", 12, "wrong_type"),
        ("records.jsonl", 13, "too_large"),
    ]
    content = read_jsonl(layout.quarantine(KEY) / "validated_documents.jsonl")
    assert sorted((r["record"], r["reason"]) for r in content) == [
        (7, "language:de"),
        (8, "language:fr"),
    ]
    removed = read_jsonl(layout.quarantine(KEY) / "clean_shards.jsonl")
    near_kept, near_removed = sorted([doc(2), doc(3)])
    assert sorted((r["record"], r["reason"].split(":")[:2]) for r in removed) == sorted(
        [
            (1, ["exact_duplicate", doc(0)]),
            (int(near_removed == doc(3)) + 2, ["near_duplicate", near_kept]),
        ]
    )
    shards = pl.read_parquet(part(layout.shards(KEY)))
    ids = set(shards["doc_id"])
    assert ids == {doc(0), near_kept, doc(4), doc(5), doc(6)} | {
        make_doc_id("planted", "b1", "latin.jsonl", 0)
    }
    latin = shards.filter(pl.col("path") == "latin.jsonl")["text"][0]
    assert latin.endswith("café créme")

    masked = shards.filter(pl.col("doc_id") == doc(6))["text"][0]
    assert masked.endswith(
        "Contact: email [EMAIL], phone [PHONE], credit_card [CREDIT_CARD], ip_address "
        "[IP_ADDRESS], iban [IBAN], national_id [NATIONAL_ID], secret [SECRET]."
    )
    everything = " ".join(shards["text"].to_list())
    assert not any(value in everything for value in PII.values())
    event = instance.get_latest_materialization_event(dg.AssetKey("validated_documents"))
    assert event.asset_materialization.metadata["pii_masked"].value == dict.fromkeys(sorted(PII), 1)
    profile = json.loads(layout.profile(KEY).read_text())
    assert profile["profile"]["documents"] == 8  # validated: before dedup
    assert profile["profile"]["languages"] == {"en": 8}


PROSE = (
    "The function returns the list of names that have been defined in the current "
    "scope and it is often used with the interpreter to see what exists there."
)


def sentence_words(n: int) -> str:
    """English prose of exactly `n` words (passes every rule but the word count)."""
    base = PROSE.split()
    return " ".join((base * (n // len(base) + 1))[:n])


def test_review_queue_holds_borderline_documents_until_a_person_decides(
    layout, instance, resources
):
    """Quality decides training only: every document stays searchable. Held
    documents wait for a person up to the source's cap, most words first; the
    rest are decided by the rule."""
    key = "review/b1"
    layout.sources_config.parent.mkdir(parents=True, exist_ok=True)
    layout.sources_config.write_text("[sources.review]\nreview_cap = 1\n")
    land(
        layout,
        key,
        {
            "docs.jsonl": jsonl(
                {"text": sentence_words(47)},  # 0 fails min_words (50) narrowly: held
                {"text": sentence_words(46)},  # 1 would be held: fewer words, over the cap
                {"text": sentence_words(53)},  # 2 passes narrowly: trained on, listed
                {"text": sentence_words(20)},  # 3 fails clearly: not trained on
                {"text": topic(5)},  # 4 not borderline
            )
        },
    )
    instance.add_dynamic_partitions(BATCHES, [key])

    def run() -> tuple[dict[int, str | None], dict[int, str]]:
        for asset in (raw_documents, validated_documents, review_queue):
            assert dg.materialize(
                [asset], instance=instance, resources=resources, partition_key=key
            )
        kept = pl.read_parquet(part(layout.staging("validated_documents", key)))
        assert kept["for_index"].all()  # nothing is kept out of search
        assert (
            kept.select(pl.col("for_training") == pl.col("training_exclusion").is_null())
            .to_series()
            .all()
        )
        assert read_jsonl(layout.quarantine(key) / "validated_documents.jsonl") == []
        queue = pl.read_parquet(part(layout.review_queue(key)))
        return (
            dict(zip(kept["record"], kept["training_exclusion"], strict=True)),
            dict(zip(queue["record"], queue["status"], strict=True)),
        )

    training, queue = run()
    assert training == {
        0: "quality:gopher_min_words",
        1: "quality:gopher_min_words",
        2: None,
        3: "quality:gopher_min_words",
        4: None,
    }
    assert queue == {0: "held", 1: "over_cap", 2: "passed"}
    queue_table = pl.read_parquet(part(layout.review_queue(key)))
    assert queue_table["record"].to_list() == [0, 1, 2]  # held first, most words first
    row = queue_table.filter(pl.col("record") == 1).row(0, named=True)
    assert (row["rule"], row["value"], row["threshold"], row["distance"], row["margin"]) == (
        "gopher_min_words",
        46.0,
        50.0,
        -4.0,
        5.0,
    )
    metadata = instance.get_latest_materialization_event(
        dg.AssetKey("validated_documents")
    ).asset_materialization.metadata
    assert {k: metadata[k].value for k in ("for_index", "for_training", "review_held")} == {
        "for_index": 5,
        "for_training": 2,
        "review_held": 1,
    }
    assert (metadata["review_over_cap"].value, metadata["review_cap"].value) == (1, 1)
    assert metadata["training_exclusions"].value == {"quality:gopher_min_words": 3}
    assert layout.review_decisions.read_text() == "doc_id,decision,note\n"
    assert (layout.review_queue(key) / "queue.csv").exists()

    def doc_id(record: int) -> str:
        return make_doc_id("review", "b1", "docs.jsonl", record)

    layout.review_decisions.write_text(
        "doc_id,decision,note\n"
        f"{doc_id(0)},approve,fine prose\n"
        f"{doc_id(1)},reject,too thin\n"
        f"{doc_id(2)},reject,not useful\n"
        f"{doc_id(3)},approve,clear failures are not overridden\n"
        "garbage,maybe,\n"
    )
    training, queue = run()
    assert training == {
        0: None,
        1: "review:rejected",
        2: "review:rejected",
        3: "quality:gopher_min_words",
        4: None,
    }
    assert queue == {0: "approved", 1: "rejected", 2: "rejected"}
