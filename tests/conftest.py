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
