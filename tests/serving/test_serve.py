"""`llama-platform serve` as a user runs it: a gateway process with a backend process per
version; a backend killed with kill -9 under load is taken out, retried around and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from llama_assets.base.layout import DataLayout
from llama_assets.deployment.registry import promote
from llama_assets.serving.loadgen import run_load
from llama_assets.serving.routing import RouteState, write_state
from tests.serving.conftest import VARIANT
from tests.serving.servers import ROOT, free_port, stop_process, wait_ready, wait_until


def cli(*args: str, env: dict) -> list[str]:
    return [sys.executable, "-c", "import sys; from llama_assets.cli import main; sys.exit(main())",
            *args]  # fmt: skip


@pytest.fixture
def serve_root(tmp_path, model_root, versions):
    """A data root whose models are the trained ones, with the first as champion."""
    layout = DataLayout(tmp_path / "data")
    layout.models(VARIANT).parent.mkdir(parents=True)
    layout.models(VARIANT).mkdir()
    for version in versions:
        (layout.models(VARIANT) / version).local.symlink_to(
            DataLayout(model_root).models(VARIANT, version).local
        )
    promote(layout.aliases(VARIANT), versions[0], reason="test")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LLAMA_DATA_ROOT": str(layout.root),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "HF_HUB_OFFLINE": "1",
    }
    return layout, env


def test_serve_refuses_a_public_address_without_keys(serve_root):
    layout, env = serve_root
    done = subprocess.run(
        cli("serve", "--variant", VARIANT, "--host", "0.0.0.0", env=env),
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr
    assert "Traceback" not in done.stderr


def test_kill_9_of_a_backend_under_load(serve_root, versions):
    layout, env = serve_root
    stable, canary = versions
    write_state(
        layout.deployment(VARIANT),
        RouteState(VARIANT, stable=stable, canary=canary, canary_weight=50.0, status="progressing"),
    )
    port = free_port()
    proc = subprocess.Popen(
        cli("serve", "--variant", VARIANT, "--port", str(port), env=env),
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health/ready", timeout=120)
        assert proc.stdout.readline().startswith(f"serving {VARIANT} on {url}")

        def route() -> dict:
            return httpx.get(url + "/admin/route", timeout=5).json()

        wait_until(lambda: set(route()["up"]) == {stable, canary}, 120, "both backends ready")
        canary_pid = route()["backends"][canary]["pid"]
        body = {"model": VARIANT, "prompt": "the data", "max_tokens": 8, "ignore_eos": True}

        async def load_and_kill():
            async def killer():
                async with httpx.AsyncClient() as client:
                    while True:  # kill once the canary has served some of the load
                        samples = (await client.get(url + "/admin/samples")).json()["samples"]
                        if sum(s["version"] == canary for s in samples) >= 5:
                            break
                        await asyncio.sleep(0.05)
                os.kill(canary_pid, signal.SIGKILL)

            load = run_load(url, 60, 4, 90.0, lambda i: {**body, "user": f"user-{i}"})
            result, _ = await asyncio.gather(load, killer())
            return result

        result = asyncio.run(load_and_kill())
        # No request was lost: in-flight ones were retried on the stable version.
        assert result.not_sent == 0 and not result.failed, result.failed[:3]
        counts = result.by_version()
        assert counts[stable] > 0 and counts[canary] >= 5
        metrics = httpx.get(url + "/metrics").text.splitlines()
        retries = [
            m for m in metrics if m.startswith("llama_gateway_retries_total") and canary in m
        ]
        assert retries and sum(float(line.split()[-1]) for line in retries) >= 1
        # The probes took it out; the supervisor started it again.
        wait_until(lambda: route()["backends"][canary]["restarts"] == 1, 30, "restart")
        pids = [b["pid"] for b in route()["backends"].values()]
        assert canary_pid not in pids
    finally:
        stop_process(proc)
    # The gateway stopped its backends with it.
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
