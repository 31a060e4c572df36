"""The LanceDB database that holds the ``chunks`` table (local folder or S3 prefix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from llama_assets.base.store import Location
from resources.storage import open_data_root, open_location

if TYPE_CHECKING:
    import lancedb


class LanceDBResource(dg.ConfigurableResource):
    """``uri`` empty means ``<data root>/lancedb`` (local or S3, as the data root)."""

    uri: str = ""

    @property
    def location(self) -> Location:
        return open_location(self.uri) if self.uri else open_data_root() / "lancedb"

    @property
    def resolved_uri(self) -> str:
        return str(self.location)

    def connect(self) -> lancedb.DBConnection:
        # The table's schema and Lance's quiet logger belong to the retrieval
        # stage; imported here, not at module import, so resources stay below
        # the asset packages.
        from llama_assets.retrieval import index

        return index.connect(self.location)

    def read_replica(self) -> lancedb.DBConnection:
        """For queries: the database itself when local, a local copy of the
        current version when on S3 (see retrieval/index.py `read_replica`)."""
        from llama_assets.retrieval import index

        return index.read_replica(self.location)

    def chunks_table(self, dim: int) -> lancedb.table.Table:
        from llama_assets.retrieval import index

        return index.open_table(self.connect(), dim)
