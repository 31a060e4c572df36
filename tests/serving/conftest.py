"""Two trained versions of a small tiny-architecture model, and backends serving them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from llama_assets.base.layout import DataLayout
from llama_assets.serving.backend import BackendConfig, create_backend_app
from llama_assets.training.pipeline import train_and_save
from tests.serving.servers import ServerThread
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VARIANT = "tiny"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    """A data root holding two versions of the variant (different data, same settings)."""
    root = tmp_path_factory.mktemp("serving") / "data"
    models = DataLayout(root).models(VARIANT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed, data_version in ((1, "data-a"), (2, "data-b")):
            train_and_save(
                SMALL, SHORT, synthetic_corpus(60, seed=seed), data_version, models, "cpu"
            )
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def versions(model_root) -> list[str]:
    """[stable, canary]: the two versions, in a fixed order."""
    return sorted(p.name for p in DataLayout(model_root).models(VARIANT).iterdir() if p.is_dir())


def backend_thread(model_root: Path, version: str, **kwargs) -> ServerThread:
    config = BackendConfig(
        checkpoint=DataLayout(model_root).models(VARIANT, version),
        variant=VARIANT,
        version=version,
        **kwargs,
    )
    return ServerThread(create_backend_app(config)).start("/health/ready")


@pytest.fixture(scope="module")
def backends(model_root, versions):
    """In-process backends of both versions (one torch thread, as in production)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    servers = {v: backend_thread(model_root, v) for v in versions}
    yield {v: s.url for v, s in servers.items()}
    for server in servers.values():
        server.stop()
    torch.set_num_threads(threads)


def start_gateway(tmp_path: Path, urls: dict[str, str], route, safety=None, layout=None, **config):
    """A gateway in this process following `route` (written first unless None) over
    `urls`; its address goes where the control plane looks for it."""
    import json

    from llama_assets.serving.gateway import GatewayConfig, StaticBackends, create_gateway_app
    from llama_assets.serving.routing import write_state

    layout = layout or DataLayout(tmp_path / "gw-data")
    if route is not None:
        write_state(layout.deployment(VARIANT), route)
    gateway_config = GatewayConfig(
        variant=VARIANT,
        deployment_path=layout.deployment(VARIANT),
        trip_path=layout.gateway_trip(VARIANT),
        **config,
    )
    app = create_gateway_app(gateway_config, StaticBackends(urls), safety=safety)
    server = ServerThread(app).start("/health/ready")
    layout.gateway_endpoint(VARIANT).write_text(json.dumps({"url": server.url}))
    server.layout = layout
    server.app = app
    return server
