"""JSON lines: one record per line, each line decoded and rejected on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

from llama_assets.base.rejects import Reject
from llama_assets.ingest.encoding import OversizedLine, has_surrogates
from llama_assets.ingest.readers.base import Document, FileReader, json_headroom


class JsonlReader(FileReader):
    """One record per non-blank line; a line that is not a JSON object is rejected
    ("invalid_json", "not_an_object") and the file reads on."""

    formats = ("jsonl",)

    def read_records(self) -> Iterator[Document | Reject]:
        json_headroom()
        count = 0
        for index, line in self.iter_lines():
            if isinstance(line, OversizedLine):
                count += 1
                yield self.reject_oversized(index, line)
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            count += 1
            if has_surrogates(line):
                yield self.reject_undecodable(index, line)
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                yield self.reject(index, "invalid_json", line)
                continue
            yield self.from_mapping(index, obj, line)
        if count == 0:
            yield self.reject(None, "empty_file", "")
