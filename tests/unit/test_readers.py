"""Landing-batch readers: every format, every planted bad record, exact results."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llama_assets.base.rejects import Reject, make_excerpt, write_rejects
from llama_assets.ingest import encoding, readers
from llama_assets.ingest.encoding import decode_bytes, decode_line
from llama_assets.ingest.html_text import html_to_text
from llama_assets.ingest.readers import MAX_DOCUMENT_CHARS, Document, iter_batch, make_doc_id
from llama_assets.ingest.readers.base import clean_text

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>The  Page
Title</title><style>body { color: red }</style>
<script>var secret = "do not keep";</script></head>
<body>
<header>Site header</header>
<nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>
<h1>Main heading</h1>
<p>First   paragraph with <b>bold</b> and &amp; entity.</p>
<div>Second<br>line</div>
<pre>code  block
    indented</pre>
<aside>Related links</aside>
<footer>Copyright</footer>
</body></html>
"""


def _jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    d = tmp_path / "landing" / "web" / "b1"
    (d / "nested" / "deeper").mkdir(parents=True)
    (d / "docs.jsonl").write_bytes(
        _jsonl(
            json.dumps({"text": "Hello world", "title": "Greeting"}),
            '{"text": "unterminated',
            "[1, 2]",
            json.dumps({"title": "no text here"}),
            "",
            json.dumps({"text": "   \n\t "}),
            json.dumps({"text": 42}),
            json.dumps({"text": None, "content": "from content\r\nline two\x00\x07 end"}),
            json.dumps({"body": "from body", "heading": "Head"}),
        )
    )
    (d / "list.json").write_text(json.dumps([{"body": "list item"}, 5, {"text": ["a"]}]))
    (d / "one.json").write_text(json.dumps({"text": "single object", "heading": "One"}))
    (d / "bad.json").write_text("{not json")
    (d / "table.csv").write_text(
        'title,text\nFirst,csv text one\nSecond,\n,"quoted, with comma\nand newline"\n'
    )
    (d / "notext.csv").write_text("a,b\n1,2\n")
    pq.write_table(
        pa.table({"content": ["pq one", None, "pq three"], "title": ["t1", "t2", None]}),
        d / "table.parquet",
    )
    (d / "corrupt.parquet").write_bytes(b"PAR1 this is not really parquet PAR1")
    (d / "page.html").write_text(HTML_PAGE)
    (d / "nested" / "readme.md").write_text("Intro line\n\n## Install *me* ##\n\ntext\n")
    (d / "nested" / "deeper" / "guide.rst").write_text(
        ".. _label:\n\n==========\nThe Guide\n==========\n\nBody text.\n"
    )
    (d / "nested" / "plain.txt").write_text("\n\n  First line of plain  \nsecond\n")
    # cp1252: é, ï, curly quotes; 0x93/0x94 are invalid as UTF-8.
    (d / "cp1252.txt").write_bytes(b"caf\xe9 na\xefve \x93quoted\x94\r\nnext")
    (d / "utf16.txt").write_bytes("Grüße aus UTF-16\r\nzweite Zeile".encode("utf-16"))
    (d / "bom.md").write_bytes("\ufeff# Título\n\ncontenido".encode())
    (d / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    (d / "image.png").write_bytes(b"\x89PNG")
    (d / "zipped.jsonl.gz").write_bytes(
        gzip.compress(_jsonl(json.dumps({"text": "gz one"}), json.dumps({"text": "gz two"})))
    )
    (d / "zipped.txt.gz").write_bytes(gzip.compress(b"gzipped text file"))
    (d / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    (d / "empty.jsonl").write_bytes(b"\n\n")
    (d / "huge.jsonl").write_text(json.dumps({"text": "x" * (MAX_DOCUMENT_CHARS + 1)}) + "\n")
    (d / ".hidden.txt").write_text("ignored")
    (d / "_SUCCESS").write_text("")
    (d / "_tmp").mkdir()
    (d / "_tmp" / "skipped.txt").write_text("ignored")
    return d


def _results(batch_dir: Path) -> tuple[list[Document], list[Reject]]:
    items = list(iter_batch(batch_dir, "web", "b1"))
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(docs) + len(rejects) == len(items)
    return docs, rejects


def test_documents_are_exact(batch_dir: Path) -> None:
    docs, _ = _results(batch_dir)
    got = [(d.path, d.record, d.format, d.title, d.text) for d in docs]
    assert got == [
        ("bom.md", 0, "md", "Título", "# Título\n\ncontenido"),
        ("cp1252.txt", 0, "txt", "café naïve “quoted”", "café naïve “quoted”\nnext"),
        ("docs.jsonl", 0, "jsonl", "Greeting", "Hello world"),
        ("docs.jsonl", 7, "jsonl", None, "from content\nline two end"),
        ("docs.jsonl", 8, "jsonl", "Head", "from body"),
        ("list.json", 0, "json", None, "list item"),
        (
            "nested/deeper/guide.rst",
            0,
            "rst",
            "The Guide",
            ".. _label:\n\n==========\nThe Guide\n==========\n\nBody text.\n",
        ),
        (
            "nested/plain.txt",
            0,
            "txt",
            "First line of plain",
            "\n\n  First line of plain  \nsecond\n",
        ),
        ("nested/readme.md", 0, "md", "Install *me*", "Intro line\n\n## Install *me* ##\n\ntext\n"),
        ("one.json", 0, "json", "One", "single object"),
        (
            "page.html",
            0,
            "html",
            "The Page Title",
            "Main heading\n\nFirst paragraph with bold and & entity.\n\nSecond\nline\n\n"
            "code  block\n    indented",
        ),
        ("table.csv", 0, "csv", "First", "csv text one"),
        ("table.csv", 2, "csv", None, "quoted, with comma\nand newline"),
        ("table.parquet", 0, "parquet", "t1", "pq one"),
        ("table.parquet", 2, "parquet", None, "pq three"),
        ("utf16.txt", 0, "txt", "Grüße aus UTF-16", "Grüße aus UTF-16\nzweite Zeile"),
        ("zipped.jsonl.gz", 0, "jsonl", None, "gz one"),
        ("zipped.jsonl.gz", 1, "jsonl", None, "gz two"),
        ("zipped.txt.gz", 0, "txt", "gzipped text file", "gzipped text file"),
    ]
    assert all(d.source == "web" and d.batch == "b1" for d in docs)
    assert docs[2].doc_id == hashlib.sha256(b"web/b1/docs.jsonl#0").hexdigest()[:16]
    assert len({d.doc_id for d in docs}) == len(docs)


def test_rejects_have_exact_reasons(batch_dir: Path) -> None:
    _, rejects = _results(batch_dir)
    got = [(r.path, r.record, r.reason) for r in rejects]
    assert got == [
        ("bad.json", None, "invalid_json"),
        ("binary.txt", None, "binary_content"),
        ("broken.jsonl.gz", None, "unreadable_file"),
        ("corrupt.parquet", None, "unreadable_file"),
        ("docs.jsonl", 1, "invalid_json"),
        ("docs.jsonl", 2, "not_an_object"),
        ("docs.jsonl", 3, "missing_text"),
        ("docs.jsonl", 5, "empty_text"),
        ("docs.jsonl", 6, "wrong_type"),
        ("empty.jsonl", None, "empty_file"),
        ("huge.jsonl", 0, "too_large"),
        ("image.png", None, "unsupported_format"),
        ("list.json", 1, "not_an_object"),
        ("list.json", 2, "wrong_type"),
        ("notext.csv", None, "missing_text"),
        ("table.csv", 1, "empty_text"),
        ("table.parquet", 1, "missing_text"),
    ]
    assert {r.stage for r in rejects} == {"read"}
    invalid = rejects[4]
    assert invalid.excerpt == '{"text": "unterminated'
    assert all(len(r.excerpt) <= 200 for r in rejects)
    assert rejects[1].excerpt.startswith("\\x89PNG\\r\\n\\x1a\\n\\x00")
    excerpts = {(r.path, r.record): r.excerpt for r in rejects}
    assert excerpts[("list.json", 1)] == "5"
    assert excerpts[("list.json", 2)] == '{"text": ["a"]}'
    assert excerpts[("table.parquet", 1)] == '{"content": null, "title": "t2"}'
    assert excerpts[("table.csv", 1)] == "Second,"
    assert excerpts[("image.png", None)] == "image.png"


def test_looks_binary() -> None:
    assert encoding.looks_binary(b"text\x00more")
    assert encoding.looks_binary(b"\x01\x02\x03abcd")  # 3 of 7 bytes are control chars
    assert not encoding.looks_binary(b"\x01\x02abcdefgh")  # 2 of 10
    assert not encoding.looks_binary("text".encode("utf-16"))  # NULs of UTF-16 are fine
    assert not encoding.looks_binary(b"")


def test_iteration_is_deterministic_and_lazy(batch_dir: Path) -> None:
    first = list(iter_batch(batch_dir, "web", "b1"))
    assert first == list(iter_batch(batch_dir, "web", "b1"))
    stream = iter_batch(batch_dir, "web", "b1")
    assert next(stream) == first[0]  # a generator: nothing read past the first file


def test_unreadable_midway_keeps_records_already_read(tmp_path: Path) -> None:
    payload = gzip.compress(_jsonl(*(json.dumps({"text": f"doc {i}"}) for i in range(2000))))
    (tmp_path / "cut.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    items = list(iter_batch(tmp_path, "s", "b"))
    docs = [i for i in items if isinstance(i, Document)]
    assert isinstance(items[-1], Reject)
    assert items[-1].reason == "unreadable_file"
    assert items[-1].record == len(docs)
    assert [d.text for d in docs] == [f"doc {i}" for i in range(len(docs))]


def test_make_doc_id_is_scoped() -> None:
    assert make_doc_id("s", "b", "a.jsonl", 3) == make_doc_id("s", "b", "a.jsonl", 3)
    assert make_doc_id("s", "b", "a.jsonl", 3) != make_doc_id("s", "b2", "a.jsonl", 3)
    assert make_doc_id("s", "b", "a.jsonl", 0) == "d751bf212cfcb502"  # sha256("s/b/a.jsonl#0")[:16]


def test_decode_fallbacks() -> None:
    assert decode_bytes("naïve".encode()) == "naïve"
    assert decode_bytes(b"\xef\xbb\xbfbom") == "bom"
    assert decode_bytes("utf16".encode("utf-16-be").join([b"\xfe\xff", b""])) == "utf16"
    assert decode_bytes(b"\x93hi\x94") == "“hi”"  # cp1252
    assert decode_bytes("Grüße ñ ©".encode("latin-1")) == "Grüße ñ ©"  # latin-1 = cp1252 here
    # Undefined in cp1252 (latin-1 would make C1 controls of them): marked, not guessed.
    assert decode_bytes(b"\x81\x8d") == "\udc81\udc8d"
    # A UTF-8 file with one cp1252 line: each line in its own encoding, no mojibake.
    assert decode_bytes("Grüße\n".encode() + b"caf\xe9\n") == "Grüße\ncafé\n"
    assert decode_bytes(b"\xff\xfeo\x00k\x00\x00\xd8") == "ok\udc00\udcd8"  # lone surrogate


def test_decode_line_accepts_only_plausible_legacy_text() -> None:
    assert decode_line(b"\x80 5, caf\xe9\tna\xefve\f\r\n") == "€ 5, café\tnaïve\f\r\n"
    assert decode_line(b"caf\xe9\x01") == "caf\udce9\x01"  # a C0 control: not text
    assert decode_line(b"ok \xe2\x82 \x9d") == "ok \udce2\udc82 \udc9d"  # cut UTF-8 + 0x9D


def test_clean_text() -> None:
    assert clean_text("a\x00b\x1bc\r\nd\re\tf\x7f") == "abc\nd\ne\tf\x7f"


def test_html_title_falls_back_to_h1() -> None:
    title, text = html_to_text("<body><nav>menu</nav><h1>Big <i>one</i></h1><p>x</p></body>")
    assert (title, text) == ("Big one", "Big one\n\nx")


def test_excerpt_is_printable_and_bounded() -> None:
    assert make_excerpt(b"a\x00b\xff") == "a\\x00b\\xff"
    assert make_excerpt("x" * 300) == "x" * 200
    assert make_excerpt("tab\there") == "tab\\there"


def test_write_rejects_is_atomic_jsonl(tmp_path: Path) -> None:
    target = tmp_path / "q" / "rejects.jsonl"
    reject = Reject("s", "b", "f.jsonl", 1, "read", "invalid_json", "{")
    assert write_rejects([reject, reject], target) == 2
    lines = target.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "source": "s",
            "batch": "b",
            "path": "f.jsonl",
            "record": 1,
            "stage": "read",
            "reason": "invalid_json",
            "excerpt": "{",
        }
    ] * 2
    assert write_rejects([], target) == 0
    assert target.read_text() == ""
    assert sorted(p.name for p in target.parent.iterdir()) == ["rejects.jsonl"]


def test_supported_suffixes() -> None:
    assert ".jsonl.gz" in readers.SUPPORTED_SUFFIXES
    assert readers.SUPPORTED_FORMATS == (
        "jsonl", "json", "parquet", "csv", "txt", "md", "rst", "html", "htm",
    )  # fmt: skip


def test_lone_surrogates_and_undecodable_names(tmp_path: Path) -> None:
    (tmp_path / "s.jsonl").write_text('{"text": "bad \\ud800 surrogate"}\n')
    (tmp_path / b"caf\xe9.txt".decode("utf-8", "surrogateescape")).write_text("named badly")
    items = list(iter_batch(tmp_path, "s", "b"))
    assert [(type(i).__name__, i.path, i.reason) for i in items] == [
        ("Reject", "caf\\xe9.txt", "invalid_file_name"),
        ("Reject", "s.jsonl", "invalid_utf8"),  # no UTF-8 output could hold it
    ]
    assert items[1].excerpt == '{"text": "bad \\ud800 surrogate"}'
    assert write_rejects(items, tmp_path / "q.jsonl") == 2


def _by_path(items: list) -> list[tuple]:
    return [
        (i.path, i.record, i.text if isinstance(i, Document) else (i.reason, i.excerpt))
        for i in items
    ]


def test_legacy_encoded_text_is_decoded(tmp_path: Path) -> None:
    cp1252 = b"caf\xe9 \x93quoted\x94 \x80 5"
    (tmp_path / "cp.txt").write_bytes(cp1252)
    (tmp_path / "cp.jsonl").write_bytes(b'{"text": "' + cp1252 + b'"}\n')
    (tmp_path / "latin.txt").write_bytes("Grüße, señor ©".encode("latin-1"))
    assert _by_path(list(iter_batch(tmp_path, "s", "b"))) == [
        ("cp.jsonl", 0, "café “quoted” € 5"),
        ("cp.txt", 0, "café “quoted” € 5"),
        ("latin.txt", 0, "Grüße, señor ©"),
    ]


def test_invalid_utf8_is_rejected_per_record(tmp_path: Path) -> None:
    (tmp_path / "lines.jsonl").write_bytes(
        b'{"text": "first"}\n'
        b'{"text": "bad \x81\x8d bytes"}\n'
        b'{"text": "caf\xe9"}\n'
        b'{"text": "cut \xe2\x82 then \x9d\x8f"}\n'
        b'{"text": "last"}\n'
    )
    (tmp_path / "rows.csv").write_bytes(b"text\nfine\nbad \x90\nalso fine\n")
    (tmp_path / "junk.txt").write_bytes(b"\x81\x8d\x8f\x90\x9d text " * 50)
    long_line = "word " * 100
    (tmp_path / "deep.md").write_bytes(f"# Title\n\n{long_line}".encode() + b"\x81 end\n")
    items = list(iter_batch(tmp_path, "s", "b"))
    assert _by_path(items) == [
        ("deep.md", None, ("invalid_utf8", "word " * 10 + "\\x81 end\\n")),
        ("junk.txt", None, ("invalid_utf8", make_excerpt("\\x81\\x8d\\x8f\\x90\\x9d text " * 10))),
        ("lines.jsonl", 0, "first"),
        ("lines.jsonl", 1, ("invalid_utf8", '{"text": "bad \\x81\\x8d bytes"}')),
        ("lines.jsonl", 2, "café"),
        ("lines.jsonl", 3, ("invalid_utf8", '{"text": "cut \\xe2\\x82 then \\x9d\\x8f"}')),
        ("lines.jsonl", 4, "last"),
        ("rows.csv", 0, "fine"),
        ("rows.csv", 1, ("invalid_utf8", "bad \\x90")),
        ("rows.csv", 2, "also fine"),
    ]


def test_invalid_utf8_in_parquet_is_rejected_per_row(tmp_path: Path) -> None:
    # Arrow does not check UTF-8 on write: a string column can hold any bytes.
    values = [b"first row", b"bad \x81\x8d bytes", b"third row"]
    text = pa.array(values, type=pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": text, "title": ["a", "b", "c"]}), tmp_path / "t.parquet")
    assert _by_path(list(iter_batch(tmp_path, "s", "b"))) == [
        ("t.parquet", 0, "first row"),
        ("t.parquet", 1, ("invalid_utf8", "bad \\x81\\x8d bytes")),
        ("t.parquet", 2, "third row"),
    ]


def test_lone_surrogates_in_json_are_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(
        '[{"text": "a \\ud83d"}, {"text": "b", "title": "t \\udc81"},'
        ' {"text": "ok \\ud83d\\ude00"}]'
    )
    (tmp_path / "sft.jsonl").write_text(
        json.dumps({"prompt": "hi \ud800", "response": "yo"}, ensure_ascii=True) + "\n"
    )
    assert _by_path(list(iter_batch(tmp_path, "s", "b"))) == [
        ("list.json", 0, ("invalid_utf8", "a \\ud83d")),
        ("list.json", 1, ("invalid_utf8", "t \\udc81")),
        ("list.json", 2, "ok 😀"),  # a surrogate pair is one valid character
        ("sft.jsonl", 0, ("invalid_utf8", '{"prompt": "hi \\ud800", "response": "yo"}')),
    ]


def test_damaged_utf16_is_rejected_per_record(tmp_path: Path) -> None:
    lone = b"\x00\xd8"  # a high surrogate code unit with no low one after it
    (tmp_path / "u16.jsonl").write_bytes(
        b"\xff\xfe"
        + '{"text": "eins"}\n{"text": "zwei'.encode("utf-16-le")
        + lone
        + '"}\n{"text": "drei"}\n'.encode("utf-16-le")
    )
    (tmp_path / "u16.txt").write_bytes("Grüße".encode("utf-16") + b"!")  # odd length: cut
    assert _by_path(list(iter_batch(tmp_path, "s", "b"))) == [
        ("u16.jsonl", 0, "eins"),
        ("u16.jsonl", 1, ("invalid_utf16", '{"text": "zwei\\x00\\xd8"}')),
        ("u16.jsonl", 2, "drei"),
        ("u16.txt", None, ("invalid_utf16", "Grüße\\x21")),
    ]


def test_registry_picks_one_reader_per_format(tmp_path: Path) -> None:
    assert tuple(readers.READERS) == readers.SUPPORTED_FORMATS

    def picked(name: str) -> tuple | None:
        reader = readers.reader_for(tmp_path / name, "s", "b", name)
        return (
            None if reader is None else (type(reader).__name__, reader.format, reader.compression)
        )

    assert picked("A.JSONL.ZST") == ("JsonlReader", "jsonl", "zstd")
    assert picked("a.json") == ("JsonReader", "json", None)
    assert picked("page.htm.gz") == ("HtmlReader", "htm", "gzip")
    assert picked("notes.md.zstd") == ("TextReader", "md", "zstd")
    assert picked("t.parquet") == ("ParquetReader", "parquet", None)
    assert picked("rows.csv") == ("CsvReader", "csv", None)
    assert picked("scan.pdf") is None
    assert picked("archive.gz") is None
