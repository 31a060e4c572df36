"""CSV: a header row naming a text (or instruction) column, then one record per row."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from llama_assets.base.rejects import Reject
from llama_assets.ingest.encoding import OversizedLine, has_surrogates
from llama_assets.ingest.readers.base import (
    MAX_RECORD_BYTES,
    MESSAGE_KEYS,
    TEXT_KEYS,
    Document,
    FileReader,
)


class CsvReader(FileReader):
    """Rows decoded line by line (so one legacy or undecodable row is that row's
    own business); header names are matched case-insensitively.

    Records are cut from the lines first (`csv_records`, which follows the csv
    module's quoting), then each is parsed on its own: a record over
    `MAX_RECORD_BYTES` is rejected as "too_large" without being held, a record
    the csv module refuses as "invalid_csv", and the rows after either are read
    as usual.
    """

    formats = ("csv",)

    def read_records(self) -> Iterator[Document | Reject]:
        # Records are bounded by csv_records; the field limit must not cut them again.
        if csv.field_size_limit() < MAX_RECORD_BYTES:
            csv.field_size_limit(MAX_RECORD_BYTES)
        records = csv_records((line for _, line in self.iter_lines()), MAX_RECORD_BYTES)
        header = next(records, None)
        if header is None:
            yield self.reject(None, "empty_file", "")
            return
        if isinstance(header, OversizedLine):
            yield self.reject_oversized(None, header)
            return
        header = next(csv.reader([header]), [])
        names = [h.strip().lower() for h in header]
        if not any(k in names for k in (*TEXT_KEYS, *MESSAGE_KEYS)):
            yield self.reject(None, "missing_text", ",".join(header))
            return
        count = 0
        for index, record in enumerate(records):
            if isinstance(record, OversizedLine):
                count += 1
                yield self.reject_oversized(index, record)
                continue
            try:
                row = next(csv.reader([record]), [])
            except csv.Error as exc:
                count += 1
                yield self.reject(index, "invalid_csv", f"{exc}: {record}")
                continue
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


def csv_records(
    lines: Iterable[str | OversizedLine], limit: int, quote: str = '"', delimiter: str = ","
) -> Iterator[str | OversizedLine]:
    """The records of CSV text (excel dialect), each the text of its lines joined,
    or an `OversizedLine` for a record over `limit` characters (read past, not held).

    A record ends at the end of a line that does not end inside a quoted field.
    As in the csv module, a quote opens a quoted field only at a field's start,
    a doubled quote inside one is a literal quote, and anything after the
    closing quote up to the delimiter belongs to the field. The scan moves from
    quote to delimiter with str.find, so its cost is per field, not per character.
    """
    parts: list[str] = []
    size = 0
    head = b""
    oversized = False
    in_quotes = False
    for line in lines:
        if isinstance(line, OversizedLine):
            # One line over the limit: its record is, whatever its quoting.
            # Its quotes are not known; a line this long ends its record.
            if not parts and not in_quotes:
                yield line
                continue
            oversized, head = True, head or line.head
            size += line.size
            in_quotes = False
        else:
            in_quotes = _ends_in_quotes(line, in_quotes, quote, delimiter)
            size += len(line)
            if not oversized and size > limit:
                oversized, head = True, "".join(parts).encode("utf-8", "replace")[:8192]
                parts = []
            if not oversized:
                parts.append(line)
        if in_quotes:
            continue
        if oversized:
            yield OversizedLine(head, size)
        else:
            yield "".join(parts)
        parts, size, head, oversized = [], 0, b"", False
    if oversized:
        yield OversizedLine(head, size)
    elif parts:
        yield "".join(parts)


def _ends_in_quotes(line: str, in_quotes: bool, quote: str, delimiter: str) -> bool:
    """Whether `line` ends inside a quoted field, given whether it began in one."""
    pos, end = 0, len(line)
    while pos < end:
        if in_quotes:
            closing = line.find(quote, pos)
            if closing < 0:
                return True
            if line.startswith(quote, closing + 1):
                pos = closing + 2  # a doubled quote: literal
                continue
            in_quotes = False
            pos = closing + 1
            # The rest of the field, up to the delimiter, is literal.
            nxt = line.find(delimiter, pos)
            if nxt < 0:
                return False
            pos = nxt + 1
        elif line.startswith(quote, pos):
            in_quotes = True
            pos += 1
        else:
            nxt = line.find(delimiter, pos)
            if nxt < 0:
                return False
            pos = nxt + 1
    return in_quotes
