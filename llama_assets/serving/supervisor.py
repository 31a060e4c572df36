"""Backend processes for the versions the routing state names, started and kept running.

`serve` runs one CPU backend process per version in the route (the stable one,
and the canary while a rollout runs), each on its own loopback port with one
torch thread (`ProcessLauncher`), or vLLM servers in vLLM's own environment
(`VllmLauncher`: one for the base model with every plain-LoRA version, one per
merged version). A process that dies (OOM, `kill -9`) is started again on the next
pass, as a Kubernetes Deployment would; the gateway's probes keep traffic off it
until it is ready. A version that leaves the route keeps its process for
`drain_s`, so requests in flight on it (a blue-green switch under load) finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.layout import DataLayout
from llama_assets.serving.gateway import BackendLauncher
from llama_assets.serving.vllm import (
    ExportedVersion,
    VllmServer,
    export_version,
    plan_servers,
    vllm_command,
    vllm_env,
)

log = logging.getLogger("llama.supervisor")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class BackendProcess:
    version: str
    url: str
    process: subprocess.Popen
    started: float
    leaving_since: float | None = None


class ProcessLauncher(BackendLauncher):
    def __init__(
        self,
        layout: DataLayout,
        variant: str,
        device: str = "cpu",
        extra_args: dict[str, list[str]] | None = None,
        drain_s: float = 30.0,
    ) -> None:
        self.layout = layout
        self.variant = variant
        self.device = device
        self.extra_args = extra_args or {}  # per version (fault-injection drills)
        self.drain_s = drain_s
        self.processes: dict[str, BackendProcess] = {}
        self.restarts: dict[str, int] = {}
        self._written_targets: list | None = None

    def start(self, version: str) -> BackendProcess:
        port = free_port()
        command = [
            sys.executable, "-m", "llama_assets.serving.backend",
            "--checkpoint", str(self.layout.models(self.variant, version)),
            "--variant", self.variant, "--version", version,
            "--host", "127.0.0.1", "--port", str(port), "--device", self.device,
            *self.extra_args.get(version, []),
        ]  # fmt: skip
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        log.info("backend started", extra={"version": version, "port": port, "pid": process.pid})
        return BackendProcess(version, f"http://127.0.0.1:{port}", process, time.monotonic())

    async def ensure(self, versions: list[str]) -> dict[str, str]:
        now = time.monotonic()
        for version in versions:
            current = self.processes.get(version)
            if current is not None and current.process.poll() is not None:
                log.error(
                    "backend exited; starting it again",
                    extra={"version": version, "returncode": current.process.returncode},
                )
                self.restarts[version] = self.restarts.get(version, 0) + 1
                current = None
            if current is None:
                self.processes[version] = self.start(version)
            self.processes[version].leaving_since = None
        for version, backend in list(self.processes.items()):
            if version in versions:
                continue
            if backend.leaving_since is None:
                backend.leaving_since = now
            elif now - backend.leaving_since > self.drain_s:
                await asyncio.to_thread(self.stop, version)
        self.write_targets()
        return {v: self.processes[v].url for v in versions}

    def write_targets(self) -> None:
        """Prometheus file discovery: every running backend, labelled by version."""
        targets = [
            {
                "targets": [b.url.removeprefix("http://")],
                "labels": {"variant": self.variant, "version": v},
            }
            for v, b in sorted(self.processes.items())
        ]
        if targets != self._written_targets:
            atomic_write_json(self.layout.prometheus_targets(self.variant), targets)
            self._written_targets = targets

    def stop(self, version: str) -> None:
        backend = self.processes.pop(version, None)
        if backend is None:
            return
        terminate(backend.process)
        log.info("backend stopped", extra={"version": version})

    def describe(self) -> dict[str, dict]:
        return {
            v: {"url": b.url, "pid": b.process.pid, "restarts": self.restarts.get(v, 0)}
            for v, b in self.processes.items()
        }

    async def close(self) -> None:
        for version in list(self.processes):
            self.stop(version)


def terminate(process: subprocess.Popen, grace_s: float = 10.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `grace_s`. `group`: the process leads a session of
    its own (a vLLM server), so the whole group is signalled and what is left of it
    is killed once the leader is gone: no engine worker outlives its server holding
    a device's memory."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    if process.poll() is None:
        send(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            process.wait(5)
    if group:
        send(signal.SIGKILL)  # workers that outlived their server


@dataclass
class VllmProcess:
    server: VllmServer
    url: str
    process: subprocess.Popen
    started: float
    ready: bool = False
    leaving_since: float | None = None


class VllmLauncher(BackendLauncher):
    """vLLM servers for the versions in the route, started from vLLM's own python.

    A server's identity is its whole spec (model and LoRA modules): when a new
    challenger's adapter joins the base model, a server with both adapters is
    started beside the running one, which keeps serving the stable version
    until the new one answers `/health`, then drains and stops (vLLM's cold
    start takes minutes; the stable version never waits for it).
    """

    def __init__(
        self,
        layout: DataLayout,
        variant: str,
        python: Path,
        dtype: str = "bfloat16",
        extra_args: list[str] | None = None,
        drain_s: float = 30.0,
    ) -> None:
        self.layout = layout
        self.variant = variant
        self.python = python
        self.dtype = dtype
        self.extra_args = extra_args or []
        self.drain_s = drain_s
        self.exported: dict[str, ExportedVersion] = {}
        self.processes: dict[VllmServer, VllmProcess] = {}
        self.restarts: dict[str, int] = {}
        self._written_targets: list | None = None

    def export_dir(self, version: str) -> Path:
        return self.layout.serving(self.variant) / "vllm" / version

    def served_model(self, version: str) -> str:
        return version  # the LoRA module's name, or the merged server's served model name

    def start(self, server: VllmServer) -> VllmProcess:
        port = free_port()
        command = vllm_command(
            self.python, server, port, dtype=self.dtype, extra_args=self.extra_args
        )
        # vLLM says why it failed to start in its own log: kept beside the exports.
        log_path = self.layout.serving(self.variant) / "vllm" / f"server-{server.key}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            # A session of its own: vLLM's engine processes are stopped with it.
            process = subprocess.Popen(
                command, env=vllm_env(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        log.info(
            "vllm server started",
            extra={"server": server.key, "versions": server.versions, "port": port,
                   "pid": process.pid, "log": str(log_path)},
        )  # fmt: skip
        return VllmProcess(server, f"http://127.0.0.1:{port}", process, time.monotonic())

    async def ensure(self, versions: list[str]) -> dict[str, str]:
        import httpx

        for version in versions:
            if version not in self.exported:
                self.exported[version] = await asyncio.to_thread(
                    export_version,
                    self.layout.models(self.variant, version),
                    version,
                    self.export_dir(version),
                    self.variant,
                )
        plan = plan_servers(self.variant, [self.exported[v] for v in versions])
        for server in plan:
            current = self.processes.get(server)
            if current is not None and current.process.poll() is not None:
                # A server that fails at start fails again at once: back off (5 s, 10 s,
                # ... 5 min) rather than restart it on every pass.
                restarts = self.restarts.get(server.key, 0)
                if time.monotonic() - current.started < min(300.0, 5.0 * 2**restarts):
                    continue
                log.error(
                    "vllm server exited; starting it again",
                    extra={"server": server.key, "returncode": current.process.returncode},
                )
                self.restarts[server.key] = restarts + 1
                terminate(current.process, group=True)  # what is left of the exited server
                current = None
            if current is None:
                self.processes[server] = self.start(server)
        async with httpx.AsyncClient(timeout=1.0) as client:
            for backend in self.processes.values():
                if not backend.ready and backend.process.poll() is None:
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get(backend.url + "/health")
                        backend.ready = response.status_code == 200
        urls = route_versions(versions, plan, self.processes)
        now = time.monotonic()
        in_use = set(urls.values())
        for server, backend in list(self.processes.items()):
            if server in plan or backend.url in in_use:
                backend.leaving_since = None
                continue
            if backend.leaving_since is None:
                backend.leaving_since = now
            elif now - backend.leaving_since > self.drain_s:
                del self.processes[server]
                await asyncio.to_thread(terminate, backend.process, 30.0, True)
        self.write_targets()
        return urls

    def write_targets(self) -> None:
        """Prometheus file discovery: every server, labelled by the versions it carries."""
        targets = [
            {
                "targets": [b.url.removeprefix("http://")],
                "labels": {
                    "variant": self.variant,
                    "engine_kind": "vllm",
                    "server": s.key,
                    "version": ",".join(s.versions),
                },
            }
            for s, b in sorted(self.processes.items(), key=lambda kv: kv[1].url)
        ]
        if targets != self._written_targets:
            atomic_write_json(self.layout.prometheus_targets(self.variant), targets)
            self._written_targets = targets

    def describe(self) -> dict[str, dict]:
        return {
            v: {"url": b.url, "pid": b.process.pid, "server": s.key, "ready": b.ready,
                "restarts": self.restarts.get(s.key, 0)}
            for s, b in self.processes.items()
            for v in s.versions
        }  # fmt: skip

    async def close(self) -> None:
        for server in list(self.processes):
            terminate(self.processes.pop(server).process, 30.0, group=True)


def route_versions(
    versions: list[str], plan: list[VllmServer], processes: dict[VllmServer, VllmProcess]
) -> dict[str, str]:
    """Each version's URL: its planned server once ready, else an older server that still
    carries it and is ready (a restart for a new adapter), else the planned one."""
    urls = {}
    for version in versions:
        planned = next(processes[s] for s in plan if version in s.versions)
        older = [
            b for s, b in processes.items()
            if version in s.versions and b.ready and b.process.poll() is None
        ]  # fmt: skip
        urls[version] = (planned if planned.ready or not older else older[0]).url
    return urls
