"""S3 outages against a real server (SeaweedFS on loopback).

- Down when a run starts: steps retry with exponential backoff and jitter, fail
  with one clear sentence when the server stays down, and complete with nothing
  lost or duplicated once it is back (3 s later).
- Stopped while a step writes: the server is killed between a shard set's parts
  and its manifest; the step's retry publishes the set once the server is back,
  the dedup index counts each document once, and the parts the failed attempt
  uploaded are collected.
"""

from __future__ import annotations

import threading

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from llama_assets.base.shards import MANIFEST, read_manifest
from llama_assets.curate.assets import clean_shards, validated_documents
from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.landing import add_to_landing
from llama_assets.policies import IO_RETRY
from llama_assets.tables import read_table, staged
from resources.storage import DataRoot
from tests.landing import topic
from tests.s3_server import SeaweedServer

KEY = "docs/one"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server of this test's own, since the test stops it."""
    server = SeaweedServer(tmp_path / "weed").start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("LLAMA_CACHE_DIR", str(tmp_path / "cache"))
    yield server
    server.close()


def land_batch(storage: DataRoot, instance, tmp_path, documents: int) -> None:
    """`documents` topics landed on the root as batch KEY, registered."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(documents):
        (docs / f"{i}.txt").write_text(topic(i))
    add_to_landing(docs, storage.layout.landing, "docs", "one")
    instance.add_dynamic_partitions("batches", [KEY])


def restarts(instance, run_id: str) -> int:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_RESTARTED)
    return len(records.records)


def waits(instance, run_id: str) -> list[float]:
    """The seconds each retry of the run's steps waited, in order."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    return [
        r.event_log_entry.dagster_event.event_specific_data.seconds_to_wait for r in records.records
    ]


def test_an_outage_fails_clearly_then_the_retry_completes(server, tmp_path, instance):
    storage = DataRoot(root="s3://llama/outage")
    land_batch(storage, instance, tmp_path, 6)
    resources = {"storage": storage}

    # Down for good: every retry of the step fails, and the failure says why.
    server.stop()
    down = dg.materialize(
        [raw_documents], instance=instance, resources=resources, partition_key=KEY,
        raise_on_error=False,
    )  # fmt: skip
    assert not down.success
    assert restarts(instance, down.run_id) == IO_RETRY.max_retries
    # Exponential backoff from 2 s (2, 4, 8 s), each wait jittered.
    for attempt, wait in enumerate(waits(instance, down.run_id)):
        assert 0 < wait <= 2 * IO_RETRY.delay * 2**attempt
    assert len(set(waits(instance, down.run_id))) == IO_RETRY.max_retries
    [failure] = down.get_step_failure_events()
    message = failure.step_failure_data.error.to_string()
    assert f"the object store at {server.endpoint} did not answer" in message

    # Down when the run starts, back a few seconds later: a retry completes.
    back = threading.Timer(3.0, server.start)
    back.start()
    up = dg.materialize(
        [raw_documents, validated_documents], instance=instance, resources=resources,
        partition_key=KEY,
    )  # fmt: skip
    back.join()
    assert up.success and restarts(instance, up.run_id) >= 1
    raw = read_table(staged(storage.layout, raw_documents.key, KEY))
    assert raw.height == 6 and raw["doc_id"].n_unique() == 6
    valid = read_table(staged(storage.layout, validated_documents.key, KEY))
    assert valid["doc_id"].n_unique() == valid.height


def test_an_unreachable_endpoint_reads_as_a_sentence_in_the_cli(tmp_path):
    """`llama-platform` on an s3:// root whose server does not answer: one sentence
    naming the endpoint and what to check, no stack trace, exit code 1."""
    import os
    import subprocess
    import sys

    from tests.s3_server import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **os.environ,
        "LLAMA_DATA_ROOT": "s3://llama/nowhere",
        "DAGSTER_HOME": str(tmp_path / "home"),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "2",
    }
    (tmp_path / "a.txt").write_text(topic(0))
    for args in (["ingest", str(tmp_path / "a.txt"), "--source", "docs"], ["run"]):
        done = subprocess.run(
            [sys.executable, "-m", "llama_assets.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 1, out
        assert "Traceback" not in out, out
        assert f"the object store at {endpoint} did not answer" in out, out
        assert "check that the server is up" in out, out


def test_a_server_stopped_while_a_step_writes(server, tmp_path, instance, monkeypatch, pg_url):
    import resources.storage

    uri = "s3://llama/mid-write"
    monkeypatch.setenv("LLAMA_DEDUP_INDEX_URL", pg_url)
    monkeypatch.setenv("LLAMA_GC_GRACE_SECONDS", "0")
    stopped: list[str] = []
    restart = threading.Timer(2.0, server.start)

    def stop_before_the_manifest(params, **_):
        # The moment a table format fears: every part is up, the manifest is not.
        key = params.get("Key", "")
        if not stopped and "/shards/" in key and key.endswith(MANIFEST):
            stopped.append(key)
            server.stop()
            restart.start()

    def client():
        made = real_client()
        made.meta.events.register("provide-client-params.s3.PutObject", stop_before_the_manifest)
        return made

    real_client = resources.storage.s3_client
    monkeypatch.setattr(resources.storage, "s3_client", client)
    storage = DataRoot(root=uri)
    land_batch(storage, instance, tmp_path, 8)

    result = dg.materialize(
        [raw_documents, validated_documents, clean_shards], instance=instance,
        resources={"storage": storage}, partition_key=KEY,
    )  # fmt: skip
    assert stopped, "the server was never stopped: no shard manifest was written"
    restart.join()
    assert result.success and restarts(instance, result.run_id) >= 1
    failures = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.STEP_FAILURE)
    assert not failures.records  # the step retried; it never failed for good

    table = storage.layout.shards(KEY)
    manifest = read_manifest(table)  # verifies every part's size and sha256
    shards = read_table(table)
    valid = read_table(staged(storage.layout, validated_documents.key, KEY))
    assert shards["doc_id"].n_unique() == shards.height == manifest["rows"] > 0
    assert set(shards["doc_id"]) <= set(valid["doc_id"])
    index = storage.dedup_index(instance)
    assert index.batch_counts() == {KEY: shards.height}
    # The attempt cut off by the outage left parts no manifest lists; the retry
    # collected them (grace period 0 here).
    listed = {MANIFEST, *(s["file"] for s in manifest["shards"])}
    assert [o.key for o in table.files() if o.key not in listed] == []
