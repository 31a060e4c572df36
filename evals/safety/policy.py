"""The safety policy: screen a prompt (and the documents put into it) and a model output.

One module for the eval (violation rate of outputs on the red-team suite) and
for serving (the gateway screens every request and response), so the two can
never disagree about what is unsafe::

    from evals.safety import default_policy
    policy = default_policy()
    verdict = policy.screen_prompt(user_text, documents=[hit["text"] for hit in hits])
    if verdict.blocked: ...            # verdict.findings: rule, category, span, source
    verdict = policy.screen_output(generated_text)

Pure and offline: regular expressions over a normalised copy of the text plus
the curate stage's PII detectors on every output; no Dagster, no model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from evals.safety.rules import CATEGORIES, RULES, Rule
from llama_assets.curate.pii import find_pii

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
# ASCII whitespace that normalising changes: a run of two, or any but the space.
_NOT_ONE_SPACE = re.compile(r"\s\s|[^\S ]")


@dataclass(frozen=True)
class Finding:
    """One rule that fired: ``text[start:end]`` of ``source`` (the original text's offsets)."""

    rule: str
    category: str
    start: int
    end: int
    excerpt: str
    source: str
    """``prompt``, ``output`` or ``document:<i>`` (the i-th retrieved document)."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    findings: tuple[Finding, ...] = ()

    @property
    def blocked(self) -> bool:
        return not self.allowed

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(f.category for f in self.findings)

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "categories": sorted(self.categories),
            "findings": [asdict(f) for f in self.findings],
        }


def normalise(text: str) -> tuple[str, Sequence[int]]:
    """NFKC, zero-width characters dropped, whitespace runs as one space; and where
    each character of the result came from in ``text`` (so spans map back).

    Defeats the cheapest evasions (``ig\u200bnore``, full-width letters, line
    breaks inside a phrase) without changing what a span points at.
    """
    if text.isascii() and _NOT_ONE_SPACE.search(text) is None:
        # NFKC leaves ASCII as it is and zero-width characters are not ASCII: the
        # text is its own normal form (most prompts and answers; 6x faster).
        return text, range(len(text))
    return normalise_each_character(text)


def normalise_each_character(text: str) -> tuple[str, list[int]]:
    """`normalise`, one character at a time."""
    out: list[str] = []
    origin: list[int] = []
    previous_space = False
    for i, ch in enumerate(text):
        if ch in _ZERO_WIDTH:
            continue
        if ch.isspace():
            if not previous_space:
                out.append(" ")
                origin.append(i)
            previous_space = True
            continue
        previous_space = False
        for piece in unicodedata.normalize("NFKC", ch):
            out.append(piece)
            origin.append(i)
    return "".join(out), origin


@dataclass(frozen=True)
class SafetyPolicy:
    """Rules per place (prompt, document, output), what blocks, and PII on outputs.

    ``block`` names the categories that block; findings of other categories are
    reported but allow the text (e.g. a gateway that only logs jailbreaks).
    """

    rules: tuple[Rule, ...] = RULES
    block: frozenset[str] = field(default_factory=lambda: frozenset(CATEGORIES))
    pii_on_outputs: bool = True

    def _find(self, text: str, where: str, source: str) -> list[Finding]:
        normal, origin = normalise(text)
        findings = []
        for rule in self.rules:
            if where not in rule.applies_to:
                continue
            if rule.requires is not None and rule.requires.search(normal) is None:
                continue
            for match in rule.pattern.finditer(normal):
                if match.end() == match.start():
                    continue
                start = origin[match.start()]
                end = origin[match.end() - 1] + 1
                findings.append(
                    Finding(rule.name, rule.category, start, end, text[start:end], source)
                )
        return findings

    def _verdict(self, findings: Iterable[Finding]) -> Verdict:
        ordered = tuple(sorted(findings, key=lambda f: (f.source, f.start, f.rule)))
        return Verdict(allowed=not any(f.category in self.block for f in ordered), findings=ordered)

    def screen_prompt(self, text: str, documents: Sequence[str] = ()) -> Verdict:
        """The user's prompt and the retrieved documents that will be put into it.

        Documents are screened for injection only (instructions hidden in them);
        what they say about other topics is the corpus's business, not the user's.
        """
        findings = self._find(text, "prompt", "prompt")
        for i, document in enumerate(documents):
            findings += self._find(document, "document", f"document:{i}")
        return self._verdict(findings)

    def screen_document(self, text: str) -> Verdict:
        """One retrieved document alone (e.g. to drop it from the context)."""
        return self._verdict(self._find(text, "document", "document:0"))

    def screen_output(self, text: str) -> Verdict:
        """A model output: harmful instructions, signs of a jailbreak, and PII."""
        findings = self._find(text, "output", "output")
        if self.pii_on_outputs:
            findings += [
                Finding(
                    f"pii:{span.kind}",
                    "pii",
                    span.start,
                    span.end,
                    text[span.start : span.end],
                    "output",
                )
                for span in find_pii(text)
            ]
        return self._verdict(findings)


def default_policy() -> SafetyPolicy:
    """Every rule, every category blocks, PII detectors on outputs."""
    return SafetyPolicy()
