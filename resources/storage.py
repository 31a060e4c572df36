"""Where artifacts live: the data root (a local directory or an S3 prefix) and its layout."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from llama_assets.base.layout import DataLayout
from llama_assets.base.settings import data_root
from llama_assets.base.store import Location, open_root, s3_max_attempts

if TYPE_CHECKING:
    from llama_assets.curate.dedup_index import DedupIndex


def s3_client():
    """The S3 client of dagster-aws's S3Resource: endpoint, region and credentials
    from the usual ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for an S3-compatible
    server), botocore's standard retries (exponential backoff with jitter),
    ``AWS_MAX_ATTEMPTS`` attempts."""
    from dagster_aws.s3 import S3Resource  # about 1 s to import: only for S3 roots

    return S3Resource(max_attempts=s3_max_attempts()).get_client()


def _open(uri: str) -> Location:
    # One store (and one S3 client, which is thread-safe) per root, server and process.
    return _open_cached(
        uri, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID")
    )


@lru_cache(maxsize=16)
def _open_cached(uri: str, endpoint: str | None, access_key: str | None) -> Location:
    return open_root(uri, client_factory=s3_client)


def resolve_root(root: str = "") -> str:
    """``root`` as an absolute local path or an ``s3://`` URI (empty: LLAMA_DATA_ROOT)."""
    if not root:
        return data_root()
    return root.rstrip("/") if root.startswith("s3://") else str(Path(root).expanduser().resolve())


def open_data_root(root: str = "") -> Location:
    return _open(resolve_root(root))


def open_location(uri: str) -> Location:
    """Any local path or ``s3://`` URI, S3 through the S3Resource client."""
    return _open(resolve_root(uri))


class DataRoot(dg.ConfigurableResource):
    """The data root: a local directory (the embedded default) or ``s3://bucket/prefix``.

    Both give the same `layout` (base/layout.py) of Locations (base/store.py),
    so no asset branches on the scheme.
    """

    root: str = ""

    @property
    def uri(self) -> str:
        return resolve_root(self.root)

    @property
    def location(self) -> Location:
        return _open(self.uri)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.location)

    def dedup_index(
        self, instance: dg.DagsterInstance | None = None, create: bool = True
    ) -> DedupIndex | None:
        """The dedup index every run worker shares (curate/dedup_index.py).

        ``LLAMA_DEDUP_INDEX_URL`` (``postgresql://``) when set; else a SQLite file
        under a local root; else, for an S3 root, the instance's own Postgres.
        Tables live in a schema named after the data root, so two roots never
        share an index. With `create` False, None rather than a new SQLite file.
        """
        # The curate stage's module, imported here: resources stay below the stages.
        from llama_assets.curate.dedup_index import open_dedup_index

        schema = "llama_dedup_" + hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        url = os.environ.get("LLAMA_DEDUP_INDEX_URL", "").strip()
        if url:
            return open_dedup_index(url, schema)
        layout = self.layout
        if layout.root.local is not None:
            if not create and not layout.dedup_index.is_file():
                return None
            return open_dedup_index(layout.dedup_index.local)
        url = getattr(getattr(instance, "run_storage", None), "postgres_url", None)
        if url:
            return open_dedup_index(url, schema)
        raise dg.Failure(
            f"the data root {self.uri} is on S3, so the dedup index must be shared: set "
            "LLAMA_DEDUP_INDEX_URL=postgresql://… or run on a Postgres instance "
            "(deploy/prod/dagster.yaml)"
        )


LocalDataRoot = DataRoot
"""The name assets and tests used before the root could be S3."""
