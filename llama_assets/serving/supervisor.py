"""Backend processes for the versions the routing state names, started and kept running.

`serve` runs one CPU backend process per version in the route (the stable one,
and the canary while a rollout runs), each on its own loopback port with one
torch thread. A process that dies (OOM, `kill -9`) is started again on the next
pass, as a Kubernetes Deployment would; the gateway's probes keep traffic off it
until it is ready. A version that leaves the route keeps its process for
`drain_s`, so requests in flight on it (a blue-green switch under load) finish.
"""

from __future__ import annotations

import asyncio
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
        if backend.process.poll() is None:
            backend.process.send_signal(signal.SIGTERM)
            try:
                backend.process.wait(10)
            except subprocess.TimeoutExpired:
                backend.process.kill()
                backend.process.wait(5)
        log.info("backend stopped", extra={"version": version})

    def describe(self) -> dict[str, dict]:
        return {
            v: {"url": b.url, "pid": b.process.pid, "restarts": self.restarts.get(v, 0)}
            for v, b in self.processes.items()
        }

    async def close(self) -> None:
        for version in list(self.processes):
            self.stop(version)
