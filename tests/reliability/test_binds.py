"""Every server binds 127.0.0.1 unless told otherwise, and refuses a non-loopback
address without authentication: the gateway without API keys, the Dagster UI and
a model backend (which have none of their own) without an authenticating proxy
in front. Each refusal is a sentence and exit code 1 or 2, before anything
listens (so no test here ever binds a non-loopback address)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_assets.serving.access import AccessError, check_bind, check_unauthenticated_bind
from llama_assets.serving.vllm import VllmServer, vllm_command

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "llama_assets.cli"]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"),
            "LLAMA_DATA_ROOT": str(tmp_path / "data")}  # fmt: skip


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.org", "127.0.0.1.nip.io"])
def test_no_server_without_authentication_on_another_address(host):
    for refuse in (
        lambda: check_bind(host, None),
        lambda: check_unauthenticated_bind(host, "the Dagster UI", behind_proxy=False),
    ):
        with pytest.raises(AccessError, match=f"refusing to serve .*on {host}"):
            refuse()
    check_unauthenticated_bind(host, "the Dagster UI", behind_proxy=True)  # the operator's word
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(loopback, None)
        check_unauthenticated_bind(loopback, "the Dagster UI", behind_proxy=False)


def test_ui_refuses_a_public_address_without_a_proxy(tmp_path):
    done = subprocess.run([*CLI, "ui", "--host", "0.0.0.0", "--port", "3999"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "error: refusing to serve the Dagster UI on 0.0.0.0: it has no authentication of its "
        "own. Bind 127.0.0.1 (the default), or put an authenticating proxy in front and pass "
        "--behind-authenticating-proxy"
    )
    assert not (tmp_path / "home").exists()  # refused before the instance was touched


def test_make_ui_goes_through_the_refusing_command(tmp_path):
    done = subprocess.run(
        ["make", "-s", "-o", "install", "ui", "ARGS=--host 192.0.2.1",
         f"BIN={Path(sys.executable).parent}"],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "refusing to serve the Dagster UI on 192.0.2.1" in done.stderr


def test_a_model_backend_refuses_a_public_address_without_a_proxy(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "llama_assets.serving.backend", "--checkpoint", str(tmp_path),
         "--variant", "tiny", "--version", "v1", "--host", "0.0.0.0"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: refusing to serve a model backend on 0.0.0.0: it has no authentication of its "
        "own. Bind 127.0.0.1 (the default), or put an authenticating proxy in front and pass "
        "--behind-authenticating-proxy"
    )


def test_a_vllm_server_is_never_started_open_on_another_address(tmp_path):
    server = VllmServer("v1", str(tmp_path), "v1", str(tmp_path))
    with pytest.raises(AccessError, match="refusing to serve a vLLM server on 0.0.0.0"):
        vllm_command(Path(sys.executable), server, 8100, host="0.0.0.0")
    command = vllm_command(Path(sys.executable), server, 8100, host="0.0.0.0", behind_proxy=True)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    default = vllm_command(Path(sys.executable), server, 8100)
    assert default[default.index("--host") + 1] == "127.0.0.1"


def test_servers_the_platform_starts_listen_on_loopback():
    """The defaults: `serve` (the gateway) and `ui`; the prod-local topology's
    code server and webserver."""
    from llama_assets.cli import cli

    for command in ("serve", "ui"):
        [host] = [p for p in cli.commands[command].params if p.name == "host"]
        assert host.default == "127.0.0.1"
    prod_local = (REPO / "scripts" / "prod_local.py").read_text()
    assert '"0.0.0.0"' not in prod_local and prod_local.count('"127.0.0.1"') >= 3
