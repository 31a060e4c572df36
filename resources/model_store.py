"""Model weights from S3: an ``s3://bucket/prefix`` copied once to a local cache.

Hugging Face loaders and sentence-transformers read directories, so a model
in S3 (or any S3-compatible server: ``AWS_ENDPOINT_URL`` and the usual
``AWS_*`` credentials, through boto3) is mirrored under the data root's
``cache/models/<bucket>/<prefix>/`` first. The copy is staged and swapped in
whole, with a ``.complete`` marker, so an interrupted download is redone
rather than half-used.
"""

from __future__ import annotations

import os
from pathlib import Path

from llama_assets.base.atomic import staged_dir
from llama_assets.base.settings import data_root

COMPLETE_MARKER = ".complete"


def default_cache_root() -> Path:
    return data_root() / "cache" / "models"


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, prefix.strip("/")


def fetch_s3_prefix(uri: str, cache_root: Path | None = None) -> Path:
    """The local mirror of ``uri``, downloading it on first use."""
    bucket, prefix = split_s3_uri(uri)
    target = (cache_root or default_cache_root()) / bucket / prefix
    if (target / COMPLETE_MARKER).exists():
        return target
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    with staged_dir(target) as tmp:
        files = 0
        paginator = client.get_paginator("list_objects_v2")
        key_prefix = f"{prefix}/" if prefix else ""
        for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(key_prefix) :]
                if rel and not rel.endswith("/"):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, obj["Key"], str(tmp / rel))
                    files += 1
        if files == 0:
            raise FileNotFoundError(f"no objects under {uri}")
        (tmp / COMPLETE_MARKER).write_text(uri)
    return target


def local_model_dir(path: str, cache_root: Path | None = None) -> str:
    """``path`` itself when local, its cached mirror when ``s3://``."""
    return str(fetch_s3_prefix(path, cache_root)) if path.startswith("s3://") else path
