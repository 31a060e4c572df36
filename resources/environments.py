"""The resources of each environment (``LLAMA_ENV``), without the asset graph: the
CLI's commands that only touch the data root (ingest, status, search) open them
here instead of importing every asset, model and eval library of the code location."""

from __future__ import annotations

import os

from llama_assets.base.settings import data_root
from resources.device import DeviceResource
from resources.embedder import EmbedderResource
from resources.storage import DataRoot
from resources.vector_store import LanceDBResource


def local_resources() -> dict:
    # LLAMA_DATA_ROOT: a local folder or s3://bucket/prefix; the same resources serve both.
    root = data_root()
    return {
        "storage": DataRoot(root=root),
        "vector_store": LanceDBResource(uri=f"{root}/lancedb"),
        "embedder": EmbedderResource(model_path=os.environ.get("LLAMA_EMBEDDER_PATH", "")),
        "device": DeviceResource(),
    }


# prod (deploy/k8s/values.yaml) differs from local by its instance (deploy/prod/
# dagster.yaml), its data root (s3://) and its executor (LLAMA_EXECUTOR), each set by
# its own variable; the resources that read them are the same.
RESOURCES_BY_ENV = {"local": local_resources, "prod": local_resources}


def resources_for(env: str | None = None) -> dict:
    env = env or os.environ.get("LLAMA_ENV", "local")
    if env not in RESOURCES_BY_ENV:
        raise ValueError(f"LLAMA_ENV={env!r}: known environments are {sorted(RESOURCES_BY_ENV)}")
    return RESOURCES_BY_ENV[env]()
