"""The LanceDB database that holds the ``chunks`` table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

# lancedb itself is imported through ``index``, which quiets Lance's logger first.
from llama_assets.retrieval import index

if TYPE_CHECKING:
    import lancedb
from llama_assets.settings import data_root


class LanceDBResource(dg.ConfigurableResource):
    """``uri`` empty means ``<data root>/lancedb``."""

    uri: str = ""

    @property
    def resolved_uri(self) -> str:
        return self.uri or str(data_root() / "lancedb")

    def connect(self) -> lancedb.DBConnection:
        return index.connect(self.resolved_uri)

    def chunks_table(self, dim: int) -> lancedb.table.Table:
        return index.open_table(self.connect(), dim)
