"""How landing bytes become text: the encoding rule, binary sniffing, surrogate checks.

The rule: valid UTF-8 is UTF-8 (a BOM is dropped); UTF-16 only when a BOM says so;
otherwise a line is cp1252 (which agrees with latin-1 on text) when every byte
is defined there and no C0 control but tab, newline, CR or form feed appears.
Anything else is not guessed at nor replaced: its undecodable bytes come back
marked (U+DC00 + byte) for the reader to reject the record as "invalid_utf8"
("invalid_utf16" after a UTF-16 BOM). The decision is per line, so one stray
cp1252 byte neither re-decodes nor rejects a whole UTF-8 file.

Why not charset-normalizer (measured by `benchmarks/readers.py`, figures in
`benchmarks/results/readers.md`, charset-normalizer 3.5.3): on the 58 text files
of the sample corpus it agrees (all are UTF-8). On the 28 byte strings the
reader tests plant, `from_bytes(data).best()` agrees on 15: the same text for
the UTF-8, BOM and UTF-16 inputs (11 of the 17 the rule decodes), but it calls
the short cp1252/latin-1 ones cp1250, cp1006, cp1256 or UTF-16-BE, and of the
11 inputs the rule quarantines (bytes undefined in cp1252 such as 0x81 0x8D,
cut UTF-8 sequences) it decodes 7 as cp932, cp949, cp1125, mac_iceland or
UTF-16-BE text: guessed, where the project quarantines. Restricted to the
encodings the rule accepts (`cp_isolation=["utf_8", "utf_16", "cp1252"]`) it
agrees on 26 of 28 and quarantines all 11, but also quarantines b"\x93hi\x94"
(too short for it to decide) and a UTF-8 file with one cp1252 line (it judges
a whole input, the rule each line), which the tests pin as text. It is also
19x (restricted) to 48x slower on the median input (46 and 116 us against
2.4 us). So the rule stays hand-written.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from llama_assets.base.rejects import EXCERPT_CHARS

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

SNIFF_BYTES = 8192
"""How much of a file's start is inspected for binary content."""

BINARY_CONTROL_FRACTION = 0.30
"""A file whose first `SNIFF_BYTES` hold more than this share of non-text
control characters (or any NUL byte) is treated as binary."""

# C0 controls except \t \n \r \f: legacy-encoded text holding one is not text.
_IMPLAUSIBLE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
# Undecodable bytes as `decode_line` marks them: U+DC00 + byte.
_UNDECODABLE = re.compile(r"[\udc00-\udcff]")
_TEXT_CONTROL_BYTES = frozenset(b"\t\n\r\f\b\x1b")
_NON_TEXT_BYTES = frozenset(range(0x20)) - _TEXT_CONTROL_BYTES | {0x7F}


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte becomes U+DC00 + byte.

    Python's "surrogateescape" does this for bytes >= 0x80 only; UTF-16 errors
    also cover bytes below. Strict decoding never yields a lone surrogate, so
    one in decoded text always marks bytes that were not text.
    """
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end


MARK_UNDECODABLE = "llama-mark-undecodable"
"""Name of the codec error handler that marks undecodable bytes."""
codecs.register_error(MARK_UNDECODABLE, _mark_undecodable)


def decode_line(line: bytes) -> str:
    """Decode one line: UTF-8, else plausible cp1252, else marked as undecodable.

    Not UTF-8, a line is taken as cp1252 (Windows "ANSI"; for text it agrees
    with latin-1, whose 0x80-0x9F are C1 controls) when every byte is defined
    there and no C0 control but tab, newline, CR or form feed appears. Anything
    else is not text in any encoding we can tell apart: its undecodable bytes
    become U+DCxx marks (see `_mark_undecodable`), for the reader to reject.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        legacy = line.decode("cp1252")
    except UnicodeDecodeError:
        legacy = None
    if legacy is not None and not _IMPLAUSIBLE_CONTROLS.search(legacy):
        return legacy
    return line.decode("utf-8", errors=MARK_UNDECODABLE)


def decode_bytes(data: bytes) -> str:
    """Decode a whole file; undecodable bytes come back marked, never replaced.

    UTF-8 (with or without BOM) first, UTF-16 only when a BOM says so; a file
    that is not UTF-8 throughout is decoded line by line (`decode_line`), so
    one legacy line does not turn a UTF-8 file's other lines into mojibake.
    """
    if data[:2] in UTF16_BOMS:
        return data.decode("utf-16", errors=MARK_UNDECODABLE)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(decode_line(line) for line in data.splitlines(keepends=True))


@dataclass(frozen=True)
class OversizedLine:
    """A line longer than the reader's limit: never held whole, only its start
    (for a reject's excerpt) and its length in bytes (characters after a UTF-16 BOM)."""

    head: bytes
    size: int


_SKIP_PIECE = 1 << 20


def decode_lines(
    fh: IO[bytes], max_line_bytes: int | None = None
) -> Iterator[tuple[int, str | OversizedLine]]:
    """(index, decoded line) of a binary stream, streamed; encoding decided per line.

    UTF-16 streams (BOM) decode as a stream; a UTF-8 BOM is dropped. Lines keep
    their line ending; undecodable bytes are marked (`decode_line`). A line
    longer than `max_line_bytes` comes back as an `OversizedLine`: it is read
    past in 1 MiB pieces, so one line of gigabytes (a decompression bomb with no
    newline) costs 1 MiB of memory, not its size.
    """
    limit = max_line_bytes or 0
    head = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
    if head in UTF16_BOMS:
        text = io.TextIOWrapper(fh, encoding="utf-16", errors=MARK_UNDECODABLE, newline="")
        index = 0
        while line := text.readline(limit + 1 if limit else -1):
            if limit and len(line) > limit and not line.endswith("\n"):
                size = len(line)
                while piece := text.readline(_SKIP_PIECE):
                    size += len(piece)
                    if piece.endswith("\n"):
                        break
                yield index, OversizedLine(line[:SNIFF_BYTES].encode("utf-8", "replace"), size)
            else:
                yield index, line
            index += 1
        return
    index = 0
    while raw := fh.readline(limit + 1 if limit else -1):
        if limit and len(raw) > limit and not raw.endswith(b"\n"):
            size = len(raw)
            while piece := fh.readline(_SKIP_PIECE):
                size += len(piece)
                if piece.endswith(b"\n"):
                    break
            yield index, OversizedLine(raw[:SNIFF_BYTES], size)
        else:
            if index == 0 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            yield index, decode_line(raw)
        index += 1


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a lone surrogate: an undecodable-byte mark, or a JSON
    escape such as "\\ud800". Such text cannot be written as UTF-8 (Parquet, an
    index); encoding is how we ask, as it is several times faster than a regex."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def undecodable_excerpt(text: str) -> str:
    """The part of `text` around its first undecodable byte, marks as \\xNN escapes.

    Starts a little before that byte, so a reject's excerpt shows the bad bytes
    even deep in a long line or file.
    """
    match = _UNDECODABLE.search(text)
    start = max(0, match.start() - EXCERPT_CHARS // 4) if match else 0
    part = text[start : start + EXCERPT_CHARS * 2]
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", part)


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file look like binary data rather than text."""
    if head[:2] in UTF16_BOMS:
        # UTF-16 text is full of NUL bytes; judge the decoded characters instead.
        chars = head.decode("utf-16", errors="replace")
        if "\x00" in chars:
            return True
        controls = sum(1 for c in chars if ord(c) in _NON_TEXT_BYTES)
        return bool(chars) and controls / len(chars) > BINARY_CONTROL_FRACTION
    if b"\x00" in head:
        return True
    if not head:
        return False
    controls = sum(1 for b in head if b in _NON_TEXT_BYTES)
    return controls / len(head) > BINARY_CONTROL_FRACTION
