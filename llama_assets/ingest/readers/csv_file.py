"""CSV: a header row naming a text (or instruction) column, then one record per row."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator

from llama_assets.base.rejects import Reject
from llama_assets.ingest.encoding import has_surrogates
from llama_assets.ingest.readers.base import (
    MAX_DOCUMENT_CHARS,
    MESSAGE_KEYS,
    TEXT_KEYS,
    Document,
    FileReader,
)


class CsvReader(FileReader):
    """Rows decoded line by line (so one legacy or undecodable row is that row's
    own business); header names are matched case-insensitively."""

    formats = ("csv",)

    def read_records(self) -> Iterator[Document | Reject]:
        # Documents can be long; the csv module's default field limit is 128 KiB.
        limit = min(sys.maxsize, MAX_DOCUMENT_CHARS * 4)
        if csv.field_size_limit() < limit:
            csv.field_size_limit(limit)
        rows = csv.reader(line for _, line in self.iter_lines())
        header = next(rows, None)
        if header is None:
            yield self.reject(None, "empty_file", "")
            return
        names = [h.strip().lower() for h in header]
        if not any(k in names for k in (*TEXT_KEYS, *MESSAGE_KEYS)):
            yield self.reject(None, "missing_text", ",".join(header))
            return
        count = 0
        for index, row in enumerate(rows):
            if not row:
                continue
            count += 1
            if any(has_surrogates(value) for value in row):
                yield self.reject_undecodable(index, ",".join(row))
                continue
            obj = dict(zip(names, row, strict=False))
            yield self.from_mapping(index, obj, ",".join(row))
        if count == 0:
            yield self.reject(None, "empty_file", ",".join(header))
