"""Where artifacts live: the data root and its layout."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from llama_assets.base.layout import DataLayout
from llama_assets.base.settings import data_root


class LocalDataRoot(dg.ConfigurableResource):
    """A data root on the local filesystem (the embedded default).

    An S3 data root (``s3://bucket/prefix``) is the production path and will sit
    beside this class with the same ``layout`` interface.
    """

    root: str = ""

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.root).resolve() if self.root else data_root())
