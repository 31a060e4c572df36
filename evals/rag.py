"""RAG answers and hallucination: a labelled QA set answered from retrieved chunks.

QA sets (``QAItem``: question, gold answers, supporting doc ids):

- ``golden``: supplied by users at ``<root>/evals/qa_golden.jsonl``, one object a
  line: ``{"question": "...", "answers": ["..."], "doc_ids": ["..."]}`` (optionally
  ``"id"``); bad lines are reported, never fatal.
- ``generated``: from held-out documents, with the gold span known by
  construction: a sentence with one distinctive word (a number, an identifier,
  else its longest word) blanked out; the answer is that word and the
  supporting document is the sentence's own.

Each question is answered by the model from the chunks ``retrieval/search.py``
returns, through the one prompt template (``llama_assets.retrieval.prompt``).
Metrics need no judge model (SQuAD's normalisation and token F1; ragas'
non-LLM style for the rest):

- exact match and token F1 against the best gold answer;
- groundedness: the share of the answer's content tokens (stopwords dropped)
  found in the retrieved context;
- retrieval hit: a supporting document among the retrieved chunks;
- hallucination: an answer that is neither correct (F1 below
  ``CORRECT_F1``) nor grounded (groundedness below ``GROUNDED``); abstentions
  ("I don't know") and empty answers (the model stopped at once, or wrote only
  punctuation) are counted apart and are not hallucinations.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_assets.retrieval.prompt import rag_prompt

CORRECT_F1 = 0.5
GROUNDED = 0.5
MIN_SENTENCE_WORDS = 8
MAX_SENTENCE_WORDS = 40
_STOPWORDS = """a an the and or but if then else of to in on at by for with from as is are was
    were be been being it its this that these those there here which who whom what when where
    why how
    not no yes do does did done so such than too very can could will would shall should may
    might must i you he she we they me him her us them my your his our their mine yours also
    just only into onto over under about after before again all any both each few more most
    other some same own up down out off once"""
STOPWORDS = frozenset(_STOPWORDS.split())
_ABSTAIN = ("i dont know", "i do not know", "unknown", "not in the context")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*[A-Za-z0-9_]|[A-Za-z0-9]")
BLANK = "_____"
_MARKUP = re.compile(r"([=*\-~^#+|`])\1{2,}|::")


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]
    doc_ids: tuple[str, ...]
    kind: str = "golden"
    id: str = ""


def read_qa_golden(path: Path) -> tuple[list[QAItem], list[str]]:
    """Parse ``qa_golden.jsonl``: the items and one error per bad line."""
    items: list[QAItem] = []
    errors: list[str] = []
    if not Path(path).exists():
        return items, errors
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            question = str(obj["question"]).strip()
            answers = tuple(str(a) for a in obj.get("answers") or () if str(a).strip())
            doc_ids = tuple(str(d) for d in obj.get("doc_ids") or ())
            if not question or not answers:
                raise ValueError("needs a question and at least one answer")
            items.append(QAItem(question, answers, doc_ids, "golden", str(obj.get("id", n))))
        except (ValueError, KeyError, TypeError) as error:
            errors.append(f"line {n}: {error}")
    return items, errors


def _blank_candidate(words: list[str]) -> int | None:
    """The word to blank out: a number or identifier, else the longest content word;
    never the first two words (the question must keep its start)."""
    best, best_score = None, 0
    for i, word in enumerate(words[2:], 2):
        core = word.strip(string.punctuation)
        if len(core) < 3 or core.lower() in STOPWORDS or not _WORD.fullmatch(core):
            continue
        special = any(c.isdigit() for c in core) or "_" in core or core[1:] != core[1:].lower()
        score = len(core) + (20 if special else 0)
        if score > best_score:
            best, best_score = i, score
    return best


def generated_qa(docs: Sequence[tuple[str, str]], n: int, seed: int = 0) -> list[QAItem]:
    """Up to ``n`` fill-in-the-blank questions from ``(doc_id, text)`` pairs."""
    candidates = []
    for doc_id, text in sorted(docs):
        for s, sentence in enumerate(_SENTENCE.split(" ".join(text.split()))):
            words = sentence.split()
            if not MIN_SENTENCE_WORDS <= len(words) <= MAX_SENTENCE_WORDS or any(
                _MARKUP.fullmatch(w) for w in words
            ):
                continue  # headings' underlines and tables are not sentences
            i = _blank_candidate(words)
            if i is None:
                continue
            core = words[i].strip(string.punctuation)
            blanked = " ".join([*words[:i], words[i].replace(core, BLANK, 1), *words[i + 1 :]])
            question = f'Fill in the blank: "{blanked}"'
            candidates.append(QAItem(question, (core,), (doc_id,), "generated", f"{doc_id}:{s}"))
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, min(n, len(candidates))), key=lambda q: q.id)


# --- metrics ------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in gold))


def token_f1(prediction: str, gold: Sequence[str]) -> float:
    """Best SQuAD token F1 over the gold answers."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in gold:
        truth = normalize_answer(answer).split()
        common = Counter(pred) & Counter(truth)
        same = sum(common.values())
        if not pred or not truth:
            best = max(best, float(pred == truth))
            continue
        if same == 0:
            continue
        precision, recall = same / len(pred), same / len(truth)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def content_tokens(text: str) -> list[str]:
    return [t for t in normalize_answer(text).split() if t not in STOPWORDS]


def groundedness(answer: str, context: str) -> float | None:
    """Share of the answer's content tokens present in the context; None without any."""
    tokens = content_tokens(answer)
    if not tokens:
        return None
    seen = set(normalize_answer(context).split())
    return sum(1 for t in tokens if t in seen) / len(tokens)


def is_abstention(answer: str) -> bool:
    normal = normalize_answer(answer)
    return bool(normal) and any(normal.startswith(a) for a in _ABSTAIN)


def first_line(text: str) -> str:
    """The answer is the first non-empty line the model writes."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def score_answer(item: QAItem, answer: str, hits: Sequence[dict]) -> dict:
    context = " ".join(str(h["text"]) for h in hits)
    f1 = token_f1(answer, item.answers)
    em = exact_match(answer, item.answers)
    grounded = groundedness(answer, context)
    abstained = is_abstention(answer)
    empty = not normalize_answer(answer)
    correct = f1 >= CORRECT_F1
    return {
        "id": item.id,
        "kind": item.kind,
        "question": item.question,
        "answers": list(item.answers),
        "answer": answer,
        "exact_match": em,
        "f1": f1,
        "groundedness": grounded,
        "retrieval_hit": float(bool(set(item.doc_ids) & {h["doc_id"] for h in hits})),
        "abstained": abstained,
        "empty": empty,
        "hallucinated": (
            not abstained and not empty and not correct and (grounded or 0.0) < GROUNDED
        ),
    }


def aggregate(scored: Sequence[dict]) -> dict:
    n = len(scored)
    if not n:
        return {
            "questions": 0,
            "exact_match": 0.0,
            "f1": 0.0,
            "groundedness": 0.0,
            "retrieval_hit": 0.0,
            "hallucination_rate": 0.0,
            "abstention_rate": 0.0,
            "empty_rate": 0.0,
        }
    grounded = [s["groundedness"] for s in scored if s["groundedness"] is not None]
    return {
        "questions": n,
        "exact_match": sum(s["exact_match"] for s in scored) / n,
        "f1": sum(s["f1"] for s in scored) / n,
        "groundedness": sum(grounded) / len(grounded) if grounded else 0.0,
        "retrieval_hit": sum(s["retrieval_hit"] for s in scored) / n,
        "hallucination_rate": sum(s["hallucinated"] for s in scored) / n,
        "abstention_rate": sum(s["abstained"] for s in scored) / n,
        "empty_rate": sum(s["empty"] for s in scored) / n,
    }


def fit_prompt(
    question: str, hits: Sequence[dict], count_tokens: Callable[[str], int], budget: int
) -> str:
    """The template's prompt with as much context as fits ``budget`` tokens."""
    max_chars = 2000
    prompt = rag_prompt(question, hits, max_chars)
    while count_tokens(prompt) > budget and max_chars > 0:
        max_chars -= 200
        prompt = rag_prompt(question, hits, max(max_chars, 0))
    return prompt


def evaluate_rag(
    items: Sequence[QAItem],
    search: Callable[[list[str], int], list[list[dict]]],
    answer: Callable[[list[str]], list[str]],
    count_tokens: Callable[[str], int],
    prompt_budget: int,
    k: int = 4,
) -> dict:
    """Retrieve ``k`` chunks per question, answer through the template, score.

    ``answer(prompts) -> texts`` is the model; its first line is the answer.
    Returns the figures over all questions and per set, and every scored
    answer (the report keeps the hallucinated ones as diagnostics).
    """
    if not items:
        return {**aggregate([]), "by_set": {}, "k": k, "answers": []}
    hits = search([item.question for item in items], k)
    prompts = [
        fit_prompt(item.question, h, count_tokens, prompt_budget)
        for item, h in zip(items, hits, strict=True)
    ]
    outputs = answer(prompts)
    scored = [
        score_answer(item, first_line(out), h)
        for item, out, h in zip(items, outputs, hits, strict=True)
    ]
    by_set = {
        kind: aggregate([s for s in scored if s["kind"] == kind])
        for kind in sorted({s["kind"] for s in scored})
    }
    return {**aggregate(scored), "by_set": by_set, "k": k, "answers": scored, "outputs": outputs}
