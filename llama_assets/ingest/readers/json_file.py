"""JSON: one file is one object (one record) or a list of objects (one record each)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from llama_assets.base.rejects import Reject
from llama_assets.ingest.readers.base import Document, FileReader, json_headroom


class JsonReader(FileReader):
    """A JSON value read whole: an object is record 0, a list's items are records."""

    formats = ("json",)

    def read_records(self) -> Iterator[Document | Reject]:
        text = self.read_text()
        if isinstance(text, Reject):
            yield text
            return
        yield from self.parse(text)

    def parse(self, text: str) -> Iterable[Document | Reject]:
        json_headroom()
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return [self.reject(None, "invalid_json", text)]
        if isinstance(value, list):
            if not value:
                return [self.reject(None, "empty_file", text)]
            return (self.from_mapping(i, obj) for i, obj in enumerate(value))
        return [self.from_mapping(0, value, text)]
