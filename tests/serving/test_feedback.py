"""Feedback back into the data: POST /v1/feedback -> a landing batch -> the landing sensor
-> validation and PII masking -> clean shards the next fine-tune reads."""

from __future__ import annotations

import json

import dagster as dg
import httpx

from llama_assets.base.layout import DataLayout
from llama_assets.curate.assets import clean_shards, clean_shards_table, validated_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import BATCHES
from llama_assets.serving.routing import RouteState
from llama_assets.tables import read_table
from resources.storage import LocalDataRoot
from sensors.landing import landing_zone_sensor
from tests.landing import topic
from tests.serving.conftest import VARIANT, start_gateway

EMAIL = "jane.doe@example.org"


def test_feedback_lands_as_a_batch_and_reaches_the_clean_shards_masked(
    tmp_path, instance, backends, versions, monkeypatch
):
    monkeypatch.setenv("LLAMA_COALESCE_WINDOW_SECONDS", "0")
    layout = DataLayout(tmp_path / "data")
    gateway = start_gateway(
        tmp_path, {versions[0]: backends[versions[0]]}, RouteState(VARIANT, stable=versions[0]),
        layout=layout, feedback_landing=layout.landing, feedback_flush_s=3600,
    )  # fmt: skip
    try:
        url = gateway.url + "/v1/feedback"
        body = {"model": VARIANT, "prompt": "Explain the with statement"}
        answer = httpx.post(gateway.url + "/v1/completions", json=body, timeout=60)
        request_id = answer.headers["x-request-id"]
        correction = f"{topic(3)}\n\nQuestions about this go to {EMAIL}."
        accepted = [
            httpx.post(url, json=body, timeout=30)
            for body in (
                {"request_id": request_id, "rating": 2, "prompt": "Explain the with statement",
                 "correction": correction},
                {"rating": 4, "correction": topic(5)},
                {"rating": 5},  # counted, not landed: no text for the corpus
            )
        ]  # fmt: skip
        assert [r.status_code for r in accepted] == [202, 202, 202]
        assert httpx.post(url, json={"comment": "nothing"}, timeout=30).status_code == 400
        assert not (layout.landing / "feedback").exists()  # buffered until the next flush
    finally:
        gateway.stop()  # a stopping gateway lands what it holds
    [landed] = list((layout.landing / "feedback").glob("*/feedback.jsonl"))
    records = [json.loads(line) for line in landed.read_text().splitlines()]
    assert [r.get("request_id") for r in records][0] == request_id
    assert {"prompt", "response"} <= set(records[0]) and "text" in records[1]

    resources = {"storage": LocalDataRoot(root=str(layout.root))}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = landing_zone_sensor(context)
    [request] = result.run_requests
    key = request.partition_key
    assert key == f"feedback/{landed.parent.name}"
    instance.add_dynamic_partitions(BATCHES, [key])
    done = dg.materialize(
        [raw_documents, validated_documents, clean_shards],
        instance=instance, resources=resources, partition_key=key,
    )  # fmt: skip
    assert done.success
    shards = read_table(clean_shards_table(layout, key))
    assert shards.height == 2
    texts = " ".join(shards["text"].to_list())
    assert EMAIL not in texts and "[EMAIL]" in texts
    # The correction with its prompt is a chat example for the next fine-tune.
    assert shards["messages"].is_not_null().sum() == 1
