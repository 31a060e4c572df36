"""Shared fixtures: a real Dagster instance, data root and LanceDB in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from llama_assets.base.layout import DataLayout
from resources.device import DeviceResource
from resources.embedder import EmbedderResource
from resources.storage import LocalDataRoot
from resources.vector_store import LanceDBResource

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def shared_embedding_cache(tmp_path_factory):
    """One embedding cache for every data root of the session (LLAMA_EMBEDDING_CACHE,
    inherited by the CLI, daemon and webserver processes the tests start): the same
    chunk texts recur across tests, and MiniLM embeds about 10 chunks a second on
    this CPU. A test that counts what is embedded, or must catch the embedding step
    at work, removes the variable to get its root's own, cold cache."""
    path = tmp_path_factory.mktemp("embedding-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLAMA_EMBEDDING_CACHE", str(path))
        yield path


@pytest.fixture
def own_embedding_cache(monkeypatch):
    """This test's data roots keep their own embedding cache (see above)."""
    monkeypatch.delenv("LLAMA_EMBEDDING_CACHE", raising=False)


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data")


@pytest.fixture
def resources(layout: DataLayout) -> dict:
    return {
        "storage": LocalDataRoot(root=str(layout.root)),
        "vector_store": LanceDBResource(uri=str(layout.lancedb)),
        "embedder": EmbedderResource(),
        "device": DeviceResource(preference="cpu"),
    }


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


# --- a real S3-compatible server (SeaweedFS) on loopback, for the S3 tests -----------------


@pytest.fixture(scope="session")
def s3_server():
    """One ``weed mini`` for the session (ready in about 2 s), stopped by PID."""
    from tests.s3_server import SeaweedServer

    server = SeaweedServer().start()
    yield server
    server.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """The AWS_* variables of the test server, and a cache folder of this test's own."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLAMA_EMBEDDING_CACHE")  # the root's own, on S3
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("LLAMA_CACHE_DIR", str(tmp_path / "cache"))
    return s3_server


@pytest.fixture
def s3_uri(s3_env) -> str:
    """A fresh ``s3://`` data root (a prefix of its own in the test bucket)."""
    import uuid

    from tests.s3_server import BUCKET

    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


# --- PostgreSQL (the machine's server, 127.0.0.1:5432): a database of this session's own ---


@pytest.fixture(scope="session")
def pg_url():
    """A fresh database on the local PostgreSQL server, dropped at the end."""
    import uuid

    import psycopg2

    admin = os.environ.get(
        "LLAMA_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"llama_test_{uuid.uuid4().hex[:10]}"
    try:
        db = psycopg2.connect(admin)
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {admin} ({exc}); "
            "start it or set LLAMA_TEST_PG_ADMIN_URL"
        )
    db.autocommit = True
    with db.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    with db.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    db.close()
