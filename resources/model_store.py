"""Model weights from S3: an ``s3://bucket/prefix`` copied once to a local cache.

Hugging Face loaders and sentence-transformers read directories, so a model
in S3 (or any S3-compatible server: ``AWS_ENDPOINT_URL`` and the usual
``AWS_*`` credentials; the client base/store.py builds as dagster-aws's
S3Resource does, since torchrun workers load weights without Dagster) is mirrored
under ``<cache>/<bucket>/<prefix>/`` first: the data root's ``cache/models/``
on a local root, ``LLAMA_CACHE_DIR`` (a local folder) on an S3 root. The copy
is staged and swapped in whole, with a ``.complete`` marker, so an interrupted
download is redone rather than half-used.
"""

from __future__ import annotations

from pathlib import Path

from llama_assets.base.atomic import staged_dir
from llama_assets.base.settings import data_root
from llama_assets.base.store import default_cache_root as local_cache_root
from llama_assets.base.store import open_root, split_s3_uri

COMPLETE_MARKER = ".complete"

__all__ = ["default_cache_root", "fetch_s3_prefix", "local_model_dir", "split_s3_uri"]


def default_cache_root() -> Path:
    root = data_root()
    return (
        local_cache_root() / "models"
        if root.startswith("s3://")
        else Path(root) / "cache" / "models"
    )


def fetch_s3_prefix(uri: str, cache_root: Path | None = None) -> Path:
    """The local mirror of ``uri``, downloading it on first use."""
    bucket, prefix = split_s3_uri(uri)
    target = (cache_root or default_cache_root()) / bucket / prefix
    if (target / COMPLETE_MARKER).exists():
        return target
    source = open_root(f"s3://{bucket}") / prefix if prefix else open_root(uri)
    with staged_dir(target) as tmp:
        files = 0
        for obj in source.files():
            if obj.key.endswith("/"):
                continue
            (tmp / obj.key).parent.mkdir(parents=True, exist_ok=True)
            source.store.download((source / obj.key).key, tmp / obj.key)
            files += 1
        if files == 0:
            raise FileNotFoundError(f"no objects under {uri}")
        (tmp / COMPLETE_MARKER).write_text(uri)
    return target


def local_model_dir(path: str, cache_root: Path | None = None) -> str:
    """``path`` itself when local, its cached mirror when ``s3://``."""
    return str(fetch_s3_prefix(path, cache_root)) if path.startswith("s3://") else path
