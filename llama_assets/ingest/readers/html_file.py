"""HTML: one page is one document, its visible text (see `ingest/html_text.py`)."""

from __future__ import annotations

from collections.abc import Iterator

from llama_assets.base.rejects import Reject
from llama_assets.ingest.html_text import html_to_text
from llama_assets.ingest.readers.base import Document, FileReader


class HtmlReader(FileReader):
    """The page decoded as any text file, then reduced to its visible text; the
    title is the page's <title>, else its first <h1>."""

    formats = ("html", "htm")

    def read_records(self) -> Iterator[Document | Reject]:
        text = self.read_text()
        if isinstance(text, Reject):
            yield text
            return
        title, body = html_to_text(text)
        yield self.document(0, body, title)
