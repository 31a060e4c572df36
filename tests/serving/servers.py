"""Real servers on loopback for the serving tests: uvicorn in a thread, or a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, ready_path: str | None = None, timeout: float = 60.0) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout, f"{self.url} did not start")
        if ready_path:
            wait_ready(self.url + ready_path, timeout)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def wait_until(predicate, timeout: float, message: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise TimeoutError(message)


def wait_ready(url: str, timeout: float = 60.0) -> None:
    def ok() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ok, timeout, f"{url} never answered 200", every=0.1)


def start_backend_process(
    checkpoint: Path, variant: str, version: str, *extra: str, env: dict | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_assets.serving.backend", "--checkpoint", str(checkpoint),
            "--variant", variant, "--version", version, "--port", str(port), *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)  # `serve` stops its backends first
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
