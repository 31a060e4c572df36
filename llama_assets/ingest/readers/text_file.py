"""Plain text, Markdown and reStructuredText: one file is one document."""

from __future__ import annotations

import re
from collections.abc import Iterator

from llama_assets.base.rejects import Reject
from llama_assets.ingest.readers.base import Document, FileReader, clean_text

_MD_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


class TextReader(FileReader):
    """The whole file, cleaned, is the text; the title comes from the markup."""

    formats = ("txt", "md", "rst")

    def read_records(self) -> Iterator[Document | Reject]:
        text = self.read_text()
        if isinstance(text, Reject):
            yield text
            return
        text = clean_text(text)
        yield self.document(0, text, plain_title(text, self.format))


def plain_title(text: str, fmt: str) -> str | None:
    """Title of a text document: first Markdown heading, rst title, or first line."""
    lines = text.split("\n")
    if fmt == "md":
        for i, line in enumerate(lines):
            match = _MD_ATX.match(line)
            if match:
                return match.group(1).strip()
            if line.strip() and i + 1 < len(lines) and _MD_SETEXT.match(lines[i + 1]):
                return line.strip()
    elif fmt == "rst":
        for i, line in enumerate(lines[:-1]):
            stripped = line.strip()
            under = lines[i + 1].rstrip()
            if (
                stripped
                and not _RST_ADORNMENT.match(stripped)
                and _RST_ADORNMENT.match(under)
                and len(under) >= len(stripped)
            ):
                return stripped
    first = next((line.strip() for line in lines if line.strip()), None)
    return first
