# ruff: noqa: E501  (the Markdown table template reads better unwrapped)
"""The readers' two hand-written parts against well-kept libraries (issue 9, point 6).

(a) HTML extraction: `ingest/html_text.py` against trafilatura and resiliparse,
on the sample corpus's HTML pages, the planted pages of the reader tests, and
div-layout variants of the sample pages (the same main text wrapped in the
boilerplate that real sites put in plain <div>s: menu, cookie banner, share
links, related posts, comments), since every sample page marks its furniture
with semantic tags. Judged against each page's known parts, not by eye:
  - main text kept: word recall of the main content (every block of <main>,
    or of the planted page's body outside its furniture), multiset of words;
  - boilerplate removed: share of furniture blocks (nav, header, footer, aside,
    script, style and the div-layout furniture) whose text does NOT appear in
    the output;
  - heading kept: the page's <h1> text appears in the output;
  - <pre> kept verbatim: every <pre> block's text appears as is (line breaks
    and indentation), where a page has one;
  - title: the extractor's title equals the page's <title> (resiliparse has
    no title in its text extraction; its HTMLTree's title is used);
  - exact: the output equals what the reader tests pin (planted pages only);
  - speed: ms per page, best of `--repeat` passes over all pages.
(b) Encoding: `ingest/encoding.py`'s rule against charset-normalizer
(`from_bytes(data).best()`, and the same restricted to the encodings the rule
accepts), on the planted byte strings of the reader tests (each line of a
JSON-lines fixture on its own, as the reader decides per line) and every text
file of the sample corpus (gzip members decompressed). Agreement: both
quarantine (the rule marks undecodable bytes; charset-normalizer finds no
encoding), or both give the same text. Speed: us per input, best of `--repeat`.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/readers.py [--repeat 5]

Results: benchmarks/results/readers.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import conditions, write_results  # noqa: E402
from llama_assets.ingest.encoding import decode_bytes, has_surrogates  # noqa: E402
from llama_assets.ingest.html_text import html_to_text  # noqa: E402

SAMPLE = ROOT / "llama_assets" / "sample_data"

# -- (a) HTML ---------------------------------------------------------------------------

PLANTED_PAGE = """<!DOCTYPE html>
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
"""The page of tests/unit/test_readers.py, and what the reader test pins for it."""
PLANTED_PAGE_PINNED = (
    "The Page Title",
    "Main heading\n\nFirst paragraph with bold and & entity.\n\nSecond\nline\n\ncode  block\n    indented",
)
PLANTED_H1 = "<body><nav>menu</nav><h1>Big <i>one</i></h1><p>x</p></body>"
PLANTED_H1_PINNED = ("Big one", "Big one\n\nx")

DIV_FURNITURE = {
    "top": '<div class="menu"><a href="/">Home</a> <a href="/blog">Blog</a> <a href="/about">About us</a> <a href="/contact">Contact</a></div>'
    '<div id="cookie-banner">We use cookies to improve your experience. Accept all cookies or manage preferences.</div>',
    "bottom": '<div class="share">Share this article on Twitter Facebook LinkedIn Email</div>'
    '<div class="related"><h3>Related posts</h3><ul><li><a href="/a">Ten tips for faster loops</a></li>'
    '<li><a href="/b">Why we moved to a monorepo</a></li></ul></div>'
    '<div class="comments"><h3>3 comments</h3><p>Great post, thanks for sharing this with everyone!</p>'
    "<p>I disagree with the second point completely, it never worked for me.</p></div>"
    '<div class="site-footer">All rights reserved. Privacy policy. Terms of service. Sitemap.</div>',
}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


FURNITURE_XPATH = (
    ".//nav|.//header|.//footer|.//aside|.//script|.//style"
    "|.//div[@class='menu']|.//div[@id='cookie-banner']|.//div[@class='share']"
    "|.//div[@class='related']|.//div[@class='comments']|.//div[@class='site-footer']"
)


def page_parts(html: str) -> dict:
    """Main words, furniture blocks, h1, <pre> texts and <title> of a page (lxml):
    the main content is <main>, else <body>, without its furniture."""
    import lxml.html

    root = lxml.html.document_fromstring(html)
    furniture = [
        " ".join(_norm(piece) for piece in el.itertext() if piece.strip())
        for el in root.xpath(FURNITURE_XPATH)
    ]
    title = root.find(".//title")
    h1 = root.find(".//h1")
    pre = [el.text_content() for el in root.iter("pre")]
    for el in root.xpath(FURNITURE_XPATH):
        el.drop_tree()
    main = root.find(".//main")
    scope = main if main is not None else root.find(".//body")
    return {
        "main_words": Counter(w for piece in scope.itertext() for w in _words(piece)),
        "furniture": [f for f in furniture if f],
        "h1": _norm(h1.text_content()) if h1 is not None else None,
        "pre": pre,
        "title": _norm(title.text_content()) if title is not None else None,
    }


def extract_handwritten(html: str) -> tuple[str | None, str]:
    return html_to_text(html)


def extract_trafilatura(html: str) -> tuple[str | None, str]:
    import trafilatura

    document = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False)
    if document is None:
        return None, ""
    return document.title, document.text or ""


def extract_resiliparse(html: str) -> tuple[str | None, str]:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    text = extract_plain_text(tree, main_content=True, preserve_formatting=True)
    # It has no title logic of its own: <title>, else the first <h1>, as ours.
    h1 = tree.document.query_selector("h1")
    return (tree.title or (_norm(h1.text) if h1 is not None else None) or None), text


EXTRACTORS: dict[str, Callable[[str], tuple[str | None, str]]] = {
    "hand-written (html.parser)": extract_handwritten,
    "trafilatura": extract_trafilatura,
    "resiliparse": extract_resiliparse,
}


def html_pages() -> list[tuple[str, str, tuple | None]]:
    """(name, html, pinned (title, text) or None)."""
    pages = [("planted: test_readers page", PLANTED_PAGE, PLANTED_PAGE_PINNED)]
    pages.append(("planted: h1 fallback", PLANTED_H1, PLANTED_H1_PINNED))
    sample = sorted(SAMPLE.rglob("*.html"))
    for path in sample:
        pages.append(
            (f"sample: {path.relative_to(SAMPLE)}", path.read_text(encoding="utf-8"), None)
        )
    for path in sample:
        html = path.read_text(encoding="utf-8")
        html = html.replace("<body>", "<body>" + DIV_FURNITURE["top"], 1)
        html = html.replace("</main>", "</main>" + DIV_FURNITURE["bottom"], 1)
        pages.append((f"div layout: {path.relative_to(SAMPLE)}", html, None))
    return pages


def judge(html: str, title: str | None, text: str, pinned: tuple | None) -> dict:
    parts = page_parts(html)
    got = Counter(_words(text))
    reference = parts["main_words"]
    recall = sum((got & reference).values()) / max(1, sum(reference.values()))
    flat = _norm(text)
    furniture = [f for f in parts["furniture"] if f]
    leaked = [f for f in furniture if f in flat]
    return {
        "main_recall": round(recall, 4),
        "furniture_blocks": len(furniture),
        "furniture_leaked": len(leaked),
        "h1_kept": parts["h1"] is None or parts["h1"] in flat,
        "pre_verbatim": all(p in text for p in parts["pre"]) if parts["pre"] else None,
        "title_ok": (title and _norm(title)) == (parts["title"] or parts["h1"]),
        "exact_as_pinned": None if pinned is None else (title, text) == pinned,
        "chars": len(text),
    }


def measure_html(repeat: int) -> dict:
    pages = html_pages()
    per_page: dict[str, list[dict]] = {}
    speed = {}
    ours = [_norm(extract_handwritten(html)[1]) for _, html, _ in pages]
    for name, extractor in EXTRACTORS.items():
        rows = []
        for (page, html, pinned), own in zip(pages, ours, strict=True):
            title, text = extractor(html)
            same = _norm(text) == own
            rows.append(
                {"page": page, **judge(html, title, text, pinned), "same_text_as_ours": same}
            )
        per_page[name] = rows
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            for _, html, _ in pages:
                extractor(html)
            times.append(time.perf_counter() - started)
        speed[name] = round(min(times) / len(pages) * 1e3, 3)
    summary = {}
    groups = ("planted", "sample", "div layout")
    for name, rows in per_page.items():
        summary[name] = {}
        for group in groups:
            part = [r for r in rows if r["page"].startswith(group)]
            summary[name][group] = {
                "pages": len(part),
                "mean_main_recall": round(statistics.mean(r["main_recall"] for r in part), 4),
                "min_main_recall": min(r["main_recall"] for r in part),
                "furniture_removed": f"{sum(r['furniture_blocks'] - r['furniture_leaked'] for r in part)}/{sum(r['furniture_blocks'] for r in part)}",
                "h1_kept": f"{sum(r['h1_kept'] for r in part)}/{len(part)}",
                "pre_verbatim": f"{sum(bool(r['pre_verbatim']) for r in part if r['pre_verbatim'] is not None)}/{sum(r['pre_verbatim'] is not None for r in part)}",
                "title_ok": f"{sum(bool(r['title_ok']) for r in part)}/{len(part)}",
                "exact_as_pinned": f"{sum(bool(r['exact_as_pinned']) for r in part if r['exact_as_pinned'] is not None)}/{sum(r['exact_as_pinned'] is not None for r in part)}",
                "same_text_as_ours": f"{sum(r['same_text_as_ours'] for r in part)}/{len(part)}",
            }
        summary[name]["ms_per_page"] = speed[name]
    return {"pages": len(pages), "summary": summary, "per_page": per_page}


# -- (b) encoding ------------------------------------------------------------------------


def planted_bytes() -> list[tuple[str, bytes]]:
    """The byte strings the reader tests plant (tests/unit/test_readers.py)."""
    cp1252 = b"caf\xe9 \x93quoted\x94 \x80 5"
    lone = b"\x00\xd8"
    return [
        ("fixture cp1252.txt", b"caf\xe9 na\xefve \x93quoted\x94\r\nnext"),
        ("fixture utf16.txt", "Grüße aus UTF-16\r\nzweite Zeile".encode("utf-16")),
        ("fixture bom.md", "\ufeff# Título\n\ncontenido".encode()),
        ("fixture readme.md (ASCII)", b"Intro line\n\n## Install *me* ##\n\ntext\n"),
        ("decode: utf-8", "naïve".encode()),
        ("decode: utf-8 BOM", b"\xef\xbb\xbfbom"),
        ("decode: utf-16-be BOM", b"\xfe\xff" + "utf16".encode("utf-16-be")),
        ("decode: cp1252 quotes", b"\x93hi\x94"),
        ("decode: latin-1", "Grüße ñ ©".encode("latin-1")),
        ("decode: undefined in cp1252", b"\x81\x8d"),
        ("decode: utf-8 file, one cp1252 line", "Grüße\n".encode() + b"caf\xe9\n"),
        ("decode: utf-16 lone surrogate", b"\xff\xfeo\x00k\x00\x00\xd8"),
        ("line: cp1252 with tab/ff/CRLF", b"\x80 5, caf\xe9\tna\xefve\f\r\n"),
        ("line: cp1252 + C0 control", b"caf\xe9\x01"),
        ("line: cut utf-8 + 0x9d", b"ok \xe2\x82 \x9d"),
        ("legacy cp.txt", cp1252),
        ("legacy cp.jsonl line", b'{"text": "' + cp1252 + b'"}\n'),
        ("legacy latin.txt", "Grüße, señor ©".encode("latin-1")),
        ("jsonl line: first", b'{"text": "first"}\n'),
        ("jsonl line: bad 0x81 0x8d", b'{"text": "bad \x81\x8d bytes"}\n'),
        ("jsonl line: cp1252 e-acute", b'{"text": "caf\xe9"}\n'),
        ("jsonl line: cut utf-8 then 0x9d 0x8f", b'{"text": "cut \xe2\x82 then \x9d\x8f"}\n'),
        ("csv row: bad 0x90", b"bad \x90\n"),
        ("junk.txt", b"\x81\x8d\x8f\x90\x9d text " * 50),
        (
            "deep.md (bad byte after 500 chars)",
            f"# Title\n\n{'word ' * 100}".encode() + b"\x81 end\n",
        ),
        (
            "u16.jsonl (lone surrogate in line 2)",
            b"\xff\xfe"
            + '{"text": "eins"}\n{"text": "zwei'.encode("utf-16-le")
            + lone
            + '"}\n{"text": "drei"}\n'.encode("utf-16-le"),
        ),
        ("u16.txt (odd length)", "Grüße".encode("utf-16") + b"!"),
        ("sft.jsonl line (ASCII, JSON escape)", b'{"prompt": "hi \\ud800", "response": "yo"}\n'),
    ]


def sample_bytes() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(SAMPLE.rglob("*")):
        if not path.is_file() or path.suffix == ".png":
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                continue  # archive.jsonl.gz: a planted broken gzip, no bytes to decode
        out.append((f"sample: {path.relative_to(SAMPLE)}", data))
    return out


def rule(data: bytes) -> str | None:
    """The project's rule: the text, or None (quarantined)."""
    text = decode_bytes(data)
    return None if has_surrogates(text) else text


def charset_normalizer_best(data: bytes, restricted: bool = False) -> tuple[str | None, str | None]:
    """(text, encoding) by charset-normalizer, or (None, None) when it finds none."""
    from charset_normalizer import from_bytes

    kwargs = {"cp_isolation": ["utf_8", "utf_16", "cp1252"]} if restricted else {}
    best = from_bytes(data, **kwargs).best()
    if best is None:
        return None, None
    return str(best), best.encoding


def measure_encoding(repeat: int) -> dict:
    inputs = [("planted", name, data) for name, data in planted_bytes()] + [
        ("sample", name, data) for name, data in sample_bytes()
    ]
    rows = []
    for group, name, data in inputs:
        expected = rule(data)
        row = {
            "group": group,
            "input": name,
            "bytes": len(data),
            "rule": "quarantine" if expected is None else "text",
        }
        for variant, restricted in (
            ("charset_normalizer", False),
            ("charset_normalizer_restricted", True),
        ):
            text, encoding = charset_normalizer_best(data, restricted)
            if text is not None and text.startswith("\ufeff"):
                text = text[1:]
            agrees = (text is None and expected is None) or (text is not None and text == expected)
            row[variant] = {"agrees": agrees, "encoding": encoding, "quarantined": text is None}
        rows.append(row)
    timing = {}
    for name, fn in (
        ("rule (hand-written)", rule),
        ("charset_normalizer", lambda d: charset_normalizer_best(d)),
        ("charset_normalizer_restricted", lambda d: charset_normalizer_best(d, True)),
    ):
        per_input = []
        best_total = float("inf")
        for _ in range(repeat):
            times = []
            for _, _, data in inputs:
                started = time.perf_counter()
                fn(data)
                times.append(time.perf_counter() - started)
            if sum(times) < best_total:
                best_total, per_input = sum(times), times
        timing[name] = {
            "total_ms": round(best_total * 1e3, 3),
            "median_us": round(statistics.median(per_input) * 1e6, 1),
            "max_us": round(max(per_input) * 1e6, 1),
        }
    summary = {}
    for variant in ("charset_normalizer", "charset_normalizer_restricted"):
        summary[variant] = {}
        for label, selected in (
            (
                "planted, rule gives text",
                [r for r in rows if r["group"] == "planted" and r["rule"] == "text"],
            ),
            (
                "planted, rule quarantines",
                [r for r in rows if r["group"] == "planted" and r["rule"] == "quarantine"],
            ),
            ("sample files", [r for r in rows if r["group"] == "sample"]),
        ):
            summary[variant][label] = (
                f"{sum(r[variant]['agrees'] for r in selected)}/{len(selected)}"
            )
    return {"inputs": len(inputs), "summary": summary, "timing": timing, "rows": rows}


# -- report ----------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    html, enc = result["html"], result["encoding"]
    lines = [
        "# Readers: hand-written HTML extraction and encoding rule against libraries",
        "",
        f"Conditions: {result['conditions']}; {result['versions']}. Speed is the best of "
        f"{result['repeat']} passes (shared 2-core machine: compare rows, not with other runs).",
        "",
        f"## (a) HTML extraction ({html['pages']} pages)",
        "",
        "main recall: share of the main content's words kept (mean, min); furniture removed: "
        "boilerplate blocks whose text is absent from the output; pre verbatim: <pre> text kept "
        "with its line breaks and indentation; exact: (title, text) equals what the reader tests "
        "pin; same text as ours: equal to the hand-written output once whitespace is collapsed. "
        "planted: the two pages of tests/unit/test_readers.py; sample: the sample corpus's pages; "
        "div layout: the sample pages with the same main text wrapped in <div> furniture "
        "(menu, cookie banner, share links, related posts, comments, site footer).",
        "",
        "| extractor | pages | mean main recall | min main recall | furniture removed | h1 kept | pre verbatim | title right | exact as pinned | same text as ours | ms/page (all pages) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, groups in html["summary"].items():
        for group in ("planted", "sample", "div layout"):
            g = groups[group]
            lines.append(
                f"| {name} | {group} ({g['pages']}) | {g['mean_main_recall']} | {g['min_main_recall']} | "
                f"{g['furniture_removed']} | {g['h1_kept']} | {g['pre_verbatim']} | {g['title_ok']} | "
                f"{g['exact_as_pinned']} | {g['same_text_as_ours']} | {groups['ms_per_page'] if group == 'planted' else ''} |"
            )
    lines += [
        "",
        "Per page (main recall / furniture blocks leaked / title right / characters; = : the same "
        "text as ours once whitespace is collapsed):",
        "",
        "| page | " + " | ".join(html["summary"]) + " |",
        "|---|" + "---|" * len(html["summary"]),
    ]
    names = list(html["per_page"])
    for i, row in enumerate(html["per_page"][names[0]]):
        cells = []
        for name in names:
            r = html["per_page"][name][i]
            cells.append(
                f"{r['main_recall']} / {r['furniture_leaked']} of {r['furniture_blocks']} / "
                f"{'yes' if r['title_ok'] else 'no'} / {r['chars']}"
                + (" =" if r["same_text_as_ours"] else "")
            )
        lines.append(f"| {row['page']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## (b) Encoding ({enc['inputs']} inputs)",
        "",
        "Agreement with the project's rule (both quarantine, or the same text). "
        "restricted: `cp_isolation=['utf_8', 'utf_16', 'cp1252']`.",
        "",
        "| library | " + " | ".join(next(iter(enc["summary"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(enc["summary"].values()))),
    ]
    for variant, groups in enc["summary"].items():
        lines.append(f"| {variant} | " + " | ".join(groups.values()) + " |")
    lines += [
        "",
        "| decider | total ms (all inputs) | median us/input | max us/input |",
        "|---|---|---|---|",
    ]
    for name, t in enc["timing"].items():
        lines.append(f"| {name} | {t['total_ms']} | {t['median_us']} | {t['max_us']} |")
    lines += [
        "",
        "Disagreements (charset-normalizer's pick):",
        "",
        "| input | rule | charset_normalizer | restricted |",
        "|---|---|---|---|",
    ]
    for row in enc["rows"]:
        a, b = row["charset_normalizer"], row["charset_normalizer_restricted"]
        if a["agrees"] and b["agrees"]:
            continue

        def cell(v: dict) -> str:
            shown = "quarantine" if v["quarantined"] else f"text as {v['encoding']}"
            return ("agrees: " if v["agrees"] else "differs: ") + shown

        lines.append(f"| {row['input']} | {row['rule']} | {cell(a)} | {cell(b)} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from importlib.metadata import version

    result = {
        "conditions": conditions(),
        "versions": ", ".join(
            f"{p} {version(p)}"
            for p in ("trafilatura", "resiliparse", "charset-normalizer", "lxml")
        ),
        "repeat": args.repeat,
        "html": measure_html(args.repeat),
        "encoding": measure_encoding(args.repeat),
    }
    write_results("readers", result, markdown(result))


if __name__ == "__main__":
    main()
