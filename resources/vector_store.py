"""The LanceDB database that holds the ``chunks`` table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from llama_assets.base.settings import data_root

if TYPE_CHECKING:
    import lancedb


class LanceDBResource(dg.ConfigurableResource):
    """``uri`` empty means ``<data root>/lancedb``."""

    uri: str = ""

    @property
    def resolved_uri(self) -> str:
        return self.uri or str(data_root() / "lancedb")

    def connect(self) -> lancedb.DBConnection:
        # The table's schema and Lance's quiet logger belong to the retrieval
        # stage; imported here, not at module import, so resources stay below
        # the asset packages.
        from llama_assets.retrieval import index

        return index.connect(self.resolved_uri)

    def chunks_table(self, dim: int) -> lancedb.table.Table:
        from llama_assets.retrieval import index

        return index.open_table(self.connect(), dim)
