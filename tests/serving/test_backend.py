"""The CPU backend: OpenAI API, streaming, dynamic batching, vLLM's metrics, probes, traces."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_assets.base.layout import DataLayout
from tests.serving.conftest import VARIANT


def post(url: str, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kwargs)


def metric_samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_completion_is_greedy_generate_of_the_merged_model(backends, versions, model_root):
    url = backends[versions[0]]
    body = {"model": VARIANT, "prompt": "the model", "max_tokens": 8, "temperature": 0}
    response = post(url, "/v1/completions", body, headers={"x-request-id": "req-abc"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-abc"
    held = float(response.headers["server-timing"].removeprefix("backend;dur="))
    assert 0 < held < response.elapsed.total_seconds() * 1000
    out = response.json()
    assert out["object"] == "text_completion" and out["model"] == VARIANT
    choice = out["choices"][0]
    # Plain transformers on the same merged folder, greedy: the same tokens.
    merged = DataLayout(model_root).models(VARIANT, versions[0]) / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer("the model", return_tensors="pt")["input_ids"]
    generated = model.generate(
        ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=8, do_sample=False
    )[0, ids.shape[1] :]
    eos = tokenizer.eos_token_id
    tokens = generated.tolist()
    expected_tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
    # A last token that ends inside a UTF-8 sequence is dropped, as vLLM drops it.
    expected_text = tokenizer.decode(expected_tokens, skip_special_tokens=True).rstrip("\ufffd")
    assert choice["text"] == expected_text
    assert choice["finish_reason"] == ("stop" if eos in tokens else "length")
    assert out["usage"] == {
        "prompt_tokens": ids.shape[1],
        "completion_tokens": len(expected_tokens),
        "total_tokens": ids.shape[1] + len(expected_tokens),
    }


def test_an_output_ending_inside_a_utf8_sequence_drops_the_incomplete_bytes():
    """As vLLM's detokenizer: text ending in U+FFFD is held back while decoding, and
    an incomplete sequence left at the end is never sent (the conformance test found
    the CPU backend sending it)."""
    from llama_assets.serving.engine import BatchingEngine, EngineObserver, Sequence
    from llama_assets.serving.sampling import SamplingParams

    class Bytes:  # ids are bytes
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    engine = BatchingEngine.__new__(BatchingEngine)
    engine.tokenizer, engine.eos_ids, engine.observer = Bytes(), [0], EngineObserver()
    sent = []
    seq = Sequence([1], SamplingParams(max_tokens=4), lambda text, end: sent.append((text, end)))
    for token in "hé".encode() + b"\xc3":  # h, é in two bytes, then half of another
        engine._append(seq, token, 0.0)
    assert seq.text == "hé" and sent == [("h", None), ("é", None), ("", "length")]


def test_only_a_streamed_request_wakes_the_event_loop_for_every_token():
    """A request answered whole gets one event, the end; the engine's thread then
    never waits on the event loop for the tokens before it."""
    from llama_assets.serving.backend import engine_events

    async def events_of(stream: bool) -> list:
        events, emit = engine_events(asyncio.get_running_loop(), stream)
        for delta in ("a", "b", ""):
            emit(delta, None)
        emit("c", "stop")
        await asyncio.sleep(0)  # the callbacks run
        return [events.get_nowait() for _ in range(events.qsize())]

    assert asyncio.run(events_of(False)) == [("c", "stop")]
    assert asyncio.run(events_of(True)) == [("a", None), ("b", None), ("", None), ("c", "stop")]


def test_streaming_sends_the_same_text_as_chunks_then_done(backends, versions):
    url = backends[versions[0]]
    body = {"model": VARIANT, "prompt": "data", "max_tokens": 6, "temperature": 0,
            "ignore_eos": True}  # fmt: skip
    whole = post(url, "/v1/completions", body).json()["choices"][0]["text"]
    with httpx.stream(
        "POST", url + "/v1/completions", timeout=60,
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        response.read()
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 6


def test_chat_applies_the_chat_template_and_streams_deltas(backends, versions):
    url = backends[versions[1]]
    body = {
        "model": f"{VARIANT}@{versions[1]}",
        "messages": [{"role": "user", "content": "what is a model"}],
        "max_tokens": 5,
        "temperature": 0,
    }
    whole = post(url, "/v1/chat/completions", body).json()
    assert whole["object"] == "chat.completion"
    content = whole["choices"][0]["message"]["content"]
    events = sse_events(post(url, "/v1/chat/completions", {**body, "stream": True}))
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content", "") for d in deltas) == content


def test_errors_in_openai_shape(backends, versions):
    url = backends[versions[0]]
    missing = post(url, "/v1/completions", {"model": "nope", "prompt": "x"})
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]
    bad = post(url, "/v1/completions", {"model": VARIANT, "prompt": "x", "max_tokens": 0})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"
    too_long = post(url, "/v1/completions", {"model": VARIANT, "prompt": "word " * 500})
    assert too_long.status_code == 400 and "context" in too_long.json()["error"]["message"]


def test_concurrent_requests_share_batches_and_metrics_use_vllm_names(backends, versions):
    url = backends[versions[0]]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": VARIANT, "prompt": "tokens", "max_tokens": 12, "ignore_eos": True}
            return await asyncio.gather(
                *(client.post(url + "/v1/completions", json=body) for _ in range(8))
            )

    assert all(r.status_code == 200 for r in asyncio.run(burst()))
    samples = metric_samples(httpx.get(url + "/metrics").text)
    batch = {s.labels.get("le"): s.value for s in samples["llama_engine_batch_size_bucket"]}
    # Some batch held more than one sequence: fewer batches than requests in total.
    assert batch["1.0"] < batch["+Inf"]
    for name in (
        "vllm:e2e_request_latency_seconds_count", "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count", "vllm:request_success_total",
        "vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:num_requests_running",
        "vllm:num_requests_waiting", "llama_model_load_seconds",
        "llama_device_memory_used_bytes", "llama_device_memory_total_bytes",
    ):  # fmt: skip
        assert name in samples, name
    success = samples["vllm:request_success_total"]
    assert {s.labels["model_name"] for s in success} == {VARIANT}
    assert {s.labels["engine"] for s in success} == {"0"}
    assert sum(s.value for s in success if s.labels["finished_reason"] == "length") >= 8
    assert samples["llama_device_memory_used_bytes"][0].value > 0


def test_probes(backends, versions):
    url = backends[versions[0]]
    for probe in ("/health/startup", "/health/live", "/health/ready", "/health"):
        assert httpx.get(url + probe).status_code == 200, probe
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == VARIANT


@pytest.fixture
def traces_file(tmp_path, monkeypatch):
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("LLAMA_TRACES_FILE", str(path))
    return path
