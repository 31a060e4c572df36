"""The prose of a document, for language identification: markup, code and tables removed.

fastText's lid.176 learnt languages from prose. Code, tables and markup belong
to no language, and on a documentation page they can be most of the text: a
reST page of one sentence and a code block reads as "undetermined" to the
model, and an English page was dropped as `language:und` for it. So the model
reads only what `prose` keeps:

- dropped whole: fenced code blocks (Markdown ``` and ~~~), reST literal
  blocks (the indented block after a paragraph ending in ``::``) and code
  directives (``.. code-block::``, ``.. literalinclude::``, ...), doctest
  sessions (``>>>`` and ``...`` lines and their output), table rows and rules
  (Markdown pipe tables, reST grid and simple tables), comments and directive
  and field-list markers;
- removed inline: literals (``code``, ```code```), URLs and HTML tags; roles,
  links and emphasis keep their text (``:ref:`the if statement```, ``[text](url)``);
- then each remaining line is kept only when it reads as prose: most of its
  whitespace tokens are words (letters with surrounding punctuation), which
  drops the code lines that come without markup (an HTML page's <pre>, a
  plain-text page's indented example).

`prose_sample` also says how much of the text was prose, so the caller can
tell a page that is too short or too code-heavy to judge (curate/language.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WINDOW_CHARS = 20_000
"""Characters of a document examined for prose: bounds the cost of a huge one."""

MIN_WORD_SHARE = 0.7
"""A line is prose when at least this share of its tokens are words."""

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_CODE_DIRECTIVE = re.compile(
    r"^\s*\.\.\s+(?:code-block|code|sourcecode|literalinclude|doctest|testcode|testoutput"
    r"|productionlist|highlight|raw|math|graphviz|ipython|jupyter-execute)::",
)
_EXPLICIT_MARKUP = re.compile(r"^\s*\.\.(?:\s|$)")  # directives, comments, targets
_FIELD_MARKER = re.compile(r"^\s*:[^:\s][^:]*:(?=\s|$)")  # `:param x:` keeps its text
_DOCTEST = re.compile(r"^\s*(?:>>>|\.\.\.)(?:\s|$)")
_TABLE_ROW = re.compile(r"^\s*[|+]")  # pipe-table rows, grid-table rows and rules
_RULE = re.compile(r"^[\s=\-~^*+#:|_.`'\"]*$")  # no letters or digits: adornments, rules
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_QUOTE_OR_BULLET = re.compile(r"^\s*(?:>\s*)+|^\s*(?:[-*+•]|\d{1,3}[.)])\s+")

_INLINE_LITERAL = re.compile(r"``[^`]+``|(?<!`)`[^`\n]+`(?![`_])")
_ROLE = re.compile(r":[\w.+-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_REST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_{1,2}")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?|ftp|file)://\S+|\bwww\.\S+")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>\n]*>")
_EMPHASIS = re.compile(r"(\*{1,2}|_{1,2})(?=\w)|(?<=\w)(\*{1,2}|_{1,2})")

_MARKUP_HINT = re.compile(r"[`<\[*_]|://|www\.")
"""A line without any of these has no inline markup to remove (most prose lines)."""
# A word: letters and digits (`x86`, `IPv4`), joined by apostrophes or hyphens, or a
# number (`3.11.7`, `2,048`, `10%`), with surrounding punctuation; a whole token.
_WORD = r"[\"'(\[‘“«¿¡]*(?:[^\W_]+(?:['’\-][^\W_]+)*|\d+(?:[.,:]\d+)*%?)[\"')\]’”».,;:!?]*"
_WORD_TOKEN = re.compile(rf"(?<!\S){_WORD}(?!\S)")


@dataclass(frozen=True)
class ProseSample:
    text: str
    """The prose lines, joined by newlines."""
    share: float
    """Characters of prose per character examined (0 for an empty text)."""


def _strip_inline(line: str) -> str:
    if not _MARKUP_HINT.search(line):
        return line
    line = _ROLE.sub(r"\1", line)
    line = _REST_LINK.sub(r"\1", line)
    line = _MD_LINK.sub(r"\1", line)
    line = _INLINE_LITERAL.sub(" ", line)
    line = _URL.sub(" ", line)
    line = _HTML_TAG.sub(" ", line)
    return _EMPHASIS.sub("", line)


def is_prose_line(line: str) -> bool:
    """Whether most of the line's tokens are words: prose, not code or data."""
    tokens = len(line.split())
    return tokens > 0 and len(_WORD_TOKEN.findall(line)) >= MIN_WORD_SHARE * tokens


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def prose_sample(text: str, max_chars: int) -> ProseSample:
    """Up to `max_chars` characters of the prose of `text` (see the module docstring)."""
    window = text[:WINDOW_CHARS]
    kept: list[str] = []
    size = 0
    fence: str | None = None
    skip_above: int | None = None  # inside a literal block: skip lines indented beyond this
    literal_next = False  # the previous paragraph ended with "::"
    literal_next_indent = 0
    in_doctest = False
    examined = 0
    for line in window.split("\n"):
        examined += len(line) + 1
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        if skip_above is not None:
            if not stripped or _indent(line) > skip_above:
                continue
            skip_above = None
        if not stripped:
            in_doctest = False
            if literal_next:
                skip_above, literal_next = literal_next_indent, False
            continue
        if literal_next and _indent(line) > literal_next_indent:
            # An indented block right after "::" (no blank line: plain-text pages).
            skip_above, literal_next = literal_next_indent, False
            continue
        literal_next = False
        if in_doctest:
            continue  # a doctest's output, to the next blank line
        if stripped.endswith("::") and not stripped.startswith(".."):
            # A literal block follows (a directive's body, `.. note::`, is prose).
            literal_next, literal_next_indent = True, _indent(line)
        if not stripped[0].isalpha():
            # Every block marker starts with a non-letter: most lines skip these checks.
            match = _FENCE.match(line)
            if match:
                fence = match.group(1)[0] * 3
                continue
            if _CODE_DIRECTIVE.match(line):
                skip_above = _indent(line)
                continue
            if _DOCTEST.match(line):
                in_doctest = True
                continue
            if _TABLE_ROW.match(line) or _RULE.match(line) or _EXPLICIT_MARKUP.match(line):
                continue
            line = _FIELD_MARKER.sub("", line)
            line = _HEADING.sub("", line)
            line = _QUOTE_OR_BULLET.sub("", line)
        line = _strip_inline(line).strip().removesuffix("::")
        if is_prose_line(line):
            kept.append(line)
            size += len(line) + 1
            if size >= max_chars:
                break
    prose = "\n".join(kept)
    share = min(1.0, len(prose) / examined) if window else 0.0
    return ProseSample(prose[:max_chars], share)
