"""The one prompt template for answering with retrieved chunks.

The eval's RAG QA and red-team runs build the prompt here, and so should a RAG
application in front of the served model (the gateway forwards prompts as the
client sent them): then what is measured is what is served. Plain text (no chat
template): the platform's variants are base models fine-tuned on raw text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

INSTRUCTION = (
    "Answer the question using only the context below. "
    'If the context does not contain the answer, say "I don\'t know".'
)
MAX_CONTEXT_CHARS = 2000
"""Context budget: chunks are added in rank order until it is spent (the last
one cut), so the prompt fits small models' windows; about 500 tokens of English."""


def context_block(chunks: Sequence[Mapping | str], max_chars: int = MAX_CONTEXT_CHARS) -> str:
    """Numbered context lines ``[1] text`` from search hits (dicts with ``text``) or strings."""
    lines: list[str] = []
    used = 0
    for i, chunk in enumerate(chunks, 1):
        text = " ".join(str(chunk["text"] if isinstance(chunk, Mapping) else chunk).split())
        room = max_chars - used
        if room <= 0:
            break
        line = f"[{i}] {text[:room]}"
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def rag_prompt(
    question: str, chunks: Sequence[Mapping | str], max_chars: int = MAX_CONTEXT_CHARS
) -> str:
    """The prompt the model completes; the answer is the text it generates after it."""
    return (
        f"{INSTRUCTION}\n\nContext:\n{context_block(chunks, max_chars)}\n\n"
        f"Question: {' '.join(question.split())}\nAnswer:"
    )
