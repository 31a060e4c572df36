"""Each eval metric against values computed by hand on small fixtures."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evals import serving
from evals.lm_harness import CLOZE_CHOICES, cloze_items
from evals.memorisation import extraction_cases, extraction_rate, pii_in_outputs
from evals.perplexity import document_loss, rolling_windows
from evals.rag import (
    BLANK,
    QAItem,
    aggregate,
    evaluate_rag,
    exact_match,
    generated_qa,
    groundedness,
    normalize_answer,
    read_qa_golden,
    score_answer,
    token_f1,
)
from evals.serving import percentile


class FixedDistribution(torch.nn.Module):
    """The same next-token distribution at every position, padding or not."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.log_probs = torch.log(torch.tensor(probs))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        batch, seq = input_ids.shape
        return SimpleNamespace(logits=self.log_probs.expand(batch, seq, -1).clone())


# --- language modelling -------------------------------------------------------


def test_rolling_windows_predict_every_token_once_as_lm_eval_does():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = list(range(10, 21))  # 11 tokens
    windows = rolling_windows(tokens, 4, prefix_token_id=0)
    assert windows == [
        ([0, 10, 11, 12, 13], 4),
        ([13, 14, 15, 16, 17], 4),
        # The last, short window takes as much earlier context as fits.
        ([15, 16, 17, 18, 19, 20][-5:], 3),
    ]
    theirs = [
        make_disjoint_window(w)
        for w in get_rolling_token_windows(tokens, prefix_token=0, max_seq_len=4, context_len=1)
    ]
    # lm-eval scores the continuation t after the context c: the same ids, same targets.
    assert [(c + t, len(t)) for c, t in theirs] == windows
    assert sum(n for _, n in windows) == len(tokens)


def test_bits_per_byte_and_perplexity_by_hand():
    # Vocabulary of 4 with p = (1/2, 1/4, 1/8, 1/8): token t costs -log p[t] nats.
    model = FixedDistribution([0.5, 0.25, 0.125, 0.125])
    docs = [[0, 1, 2], [3, 3]]
    texts = ["abc", "dé"]  # 3 and 3 UTF-8 bytes ("é" is two)
    nll = math.log(2) + math.log(4) + math.log(8) + 2 * math.log(8)
    for batch_size in (1, 2, 3):
        loss = document_loss(model, docs, texts, "cpu", window=2, prefix_token_id=0,
                             batch_size=batch_size)  # fmt: skip
        assert loss.tokens == 5 and loss.bytes == 6 and loss.documents == 2
        assert loss.nll == pytest.approx(nll, rel=1e-6)
        assert loss.perplexity == pytest.approx(math.exp(nll / 5), rel=1e-6)
        # 1 + 2 + 3 + 3 + 3 = 12 bits over 6 bytes.
        assert loss.bits_per_byte == pytest.approx(12 / 6, rel=1e-6)


def test_empty_documents_count_no_bytes():
    model = FixedDistribution([0.5, 0.5])
    loss = document_loss(model, [[], [1]], ["", "x"], "cpu", window=8, prefix_token_id=0)
    assert (loss.tokens, loss.bytes, loss.documents) == (1, 1, 1)
    assert loss.bits_per_byte == pytest.approx(1.0)


def test_cloze_items_have_one_true_ending():
    texts = [
        f"Sentence number {i} talks about topic {i} in some detail here. "
        f"Another sentence {i} ends with words unique{i} alpha{i} beta{i} gamma{i}."
        for i in range(12)
    ]
    items = cloze_items(texts, 10, seed=1)
    assert len(items) == 10
    for item in items:
        assert len(item["choices"]) == CLOZE_CHOICES
        assert len(set(item["choices"])) == CLOZE_CHOICES
        truth = item["choices"][item["label"]]
        source = next(t for t in texts if (item["context"].split()[-1] + truth) in t)
        assert source  # the true ending continues the context in its own text
    assert cloze_items(texts, 10, seed=1) == items


# --- RAG ------------------------------------------------------------------------


def test_squad_normalisation_exact_match_and_f1():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert exact_match("the Port 8080.", ["port 8080"]) == 1.0
    assert exact_match("port 80", ["port 8080"]) == 0.0
    # pred {a: port, 8080, tcp} vs gold {port, 8080}: P 2/3, R 1 -> F1 0.8
    assert token_f1("port 8080 tcp", ["port 8080"]) == pytest.approx(0.8)
    assert token_f1("nothing", ["port 8080", "nothing here"]) == pytest.approx(2 / 3)
    assert token_f1("", ["x"]) == 0.0


def test_groundedness_counts_content_tokens_in_the_context():
    context = "The server listens on port 8080 by default."
    # content tokens: server, listens, 9090 -> 2 of 3 in the context
    assert groundedness("The server listens on 9090", context) == pytest.approx(2 / 3)
    assert groundedness("the of a", context) is None


def test_hallucination_needs_wrong_and_ungrounded():
    item = QAItem("q", ("8080",), ("d1",))
    hits = [{"doc_id": "d1", "text": "The port is 8080."}, {"doc_id": "d2", "text": "Other."}]
    right = score_answer(item, "8080", hits)
    grounded_wrong = score_answer(item, "port", hits)
    invented = score_answer(item, "purple elephants", hits)
    abstained = score_answer(item, "I don't know.", hits)
    empty = score_answer(item, " ... ", hits)
    assert (right["f1"], right["hallucinated"], right["retrieval_hit"]) == (1.0, False, 1.0)
    assert (grounded_wrong["f1"], grounded_wrong["hallucinated"]) == (0.0, False)
    assert invented["hallucinated"] and invented["groundedness"] == 0.0
    assert abstained["abstained"] and not abstained["hallucinated"]
    assert empty["empty"] and not empty["abstained"] and not empty["hallucinated"]
    figures = aggregate([right, grounded_wrong, invented, abstained, empty])
    assert figures["exact_match"] == 0.2
    assert figures["hallucination_rate"] == 0.2
    assert figures["abstention_rate"] == 0.2 and figures["empty_rate"] == 0.2
    # groundedness over answers with content tokens: 1, 1, 0, 0 ("know" is not in the
    # context); the empty answer has none
    assert figures["groundedness"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    missed = score_answer(item, "8080", hits[1:])
    assert missed["retrieval_hit"] == 0.0


def test_generated_questions_have_their_gold_span_by_construction():
    docs = [
        ("d1", "The default port of the service is 8080 for every deployment here."),
        ("d2", "Short one. Naming and binding ============ Binding of names introduces them."),
        ("d3", "Configure the retry_limit option before you start the worker pool."),
    ]
    items = generated_qa(docs, 10)
    assert {i.id for i in items} == {"d1:0", "d3:0"}
    by_doc = {i.doc_ids[0]: i for i in items}
    assert by_doc["d1"].answers == ("8080",)
    assert by_doc["d3"].answers == ("retry_limit",)
    for item in items:
        text = dict(docs)[item.doc_ids[0]]
        sentence = item.question.split('"')[1]
        assert sentence.replace(BLANK, item.answers[0]) == text


def test_golden_qa_file_with_a_bad_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        json.dumps({"question": "Port?", "answers": ["8080"], "doc_ids": ["d1"]})
        + "\nnot json\n"
        + json.dumps({"question": "No answer"})
        + "\n"
    )
    items, errors = read_qa_golden(path)
    assert [(i.question, i.answers, i.doc_ids) for i in items] == [("Port?", ("8080",), ("d1",))]
    assert len(errors) == 2 and errors[0].startswith("line 2")
    assert read_qa_golden(tmp_path / "missing.jsonl") == ([], [])


def test_evaluate_rag_answers_through_the_prompt_template():
    items = [QAItem("Which port?", ("8080",), ("d1",), "golden", "1")]
    seen = {}

    def search(texts, k):
        seen["k"] = k
        return [[{"doc_id": "d1", "text": "The port is 8080."}] for _ in texts]

    def answer(prompts):
        seen["prompts"] = prompts
        return ["8080\nand then more text"]

    figures = evaluate_rag(items, search, answer, lambda text: len(text.split()), 500, k=3)
    assert seen["k"] == 3
    assert "[1] The port is 8080." in seen["prompts"][0]
    assert seen["prompts"][0].endswith("Question: Which port?\nAnswer:")
    assert figures["exact_match"] == 1.0 and figures["by_set"]["golden"]["questions"] == 1
    assert figures["answers"][0]["answer"] == "8080"


# --- memorisation -----------------------------------------------------------------


def test_extraction_rate_by_hand():
    docs = [list(range(i * 100, i * 100 + 70)) for i in range(4)] + [list(range(10))]
    cases = extraction_cases(docs, 10)
    assert len(cases) == 4  # the 10-token document is too short
    assert all(len(p) == 32 and len(s) == 32 for p, s in cases)
    assert cases[0] == (list(range(0, 32)), list(range(32, 64)))

    def continue_ids(prompts, n):
        # Recites documents 0 and 2 exactly, half of document 1, nothing of 3.
        assert all(p[0] == 99999 for p in prompts) and n == 32
        out = []
        for i, (_, truth) in enumerate(cases):
            if i in (0, 2):
                out.append(list(truth))
            elif i == 1:
                out.append(list(truth[:16]) + [0] * 16)
            else:
                out.append([0] * 32)
        return out

    figures = extraction_rate(cases, continue_ids, eos_token_id=99999)
    assert figures["extraction_rate"] == 0.5
    assert figures["token_match_rate"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert figures["extracted"] == [0, 2]


def test_pii_detectors_run_on_every_output():
    figures = pii_in_outputs(
        {
            "rag": ["no pii here", "mail me: jane.doe@gmail.com"],
            "serving": ["call +44 20 7946 0958 or jane@corp.example.com", "fine"],
        }
    )
    assert figures["outputs"] == 4 and figures["with_pii"] == 2
    assert figures["pii_rate"] == 0.5
    assert figures["by_type"] == {"email": 2, "phone": 1}
    assert figures["by_source"]["rag"] == {"outputs": 2, "with_pii": 1}


# --- serving ------------------------------------------------------------------------


def test_percentile_matches_numpy():
    values = [12.0, 3.0, 7.5, 100.0, 42.0, 8.0, 9.0]
    for q in (0, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_serving_figures_by_hand(monkeypatch):
    # Two prompts after the warm-up: 32 tokens in 0.5 s (first at 10 ms) and 32 in
    # 1.5 s (first at 30 ms).
    runs = iter(
        [
            {"ttft_s": 1.0, "seconds": 9.0, "tokens": 2, "text": "warm-up, not counted"},
            {"ttft_s": 0.010, "seconds": 0.5, "tokens": 32, "text": "one"},
            {"ttft_s": 0.030, "seconds": 1.5, "tokens": 32, "text": "two"},
        ]
    )
    monkeypatch.setattr(serving, "generate_timed", lambda *args: next(runs))
    model = SimpleNamespace(eval=lambda: None)
    figures = serving.serving_figures(
        model, None, torch.device("cpu"), 3.6, prompts=("p", "q"), load_seconds=2.5
    )
    assert figures["prompts"] == 2 and figures["outputs"] == ["one", "two"]
    assert figures["load_to_first_token_s"] == 2.5
    assert figures["ttft_ms"] == pytest.approx([10.0, 30.0])
    assert figures["ttft_ms_p50"] == pytest.approx(20.0)  # halfway between the two
    assert figures["ttft_ms_p95"] == pytest.approx(29.0)  # 10 + 0.95 * 20
    assert figures["latency_ms_p50"] == pytest.approx(1000.0)
    assert figures["latency_ms_p95"] == pytest.approx(1450.0)
    assert figures["tokens_per_second"] == pytest.approx(32.0)  # 64 tokens in 2 s
    # Per prompt: 64 and 21.33 tokens/s.
    assert figures["tokens_per_second_p50"] == pytest.approx((64 + 64 / 3) / 2)
    assert figures["tokens_per_second_p95"] == pytest.approx(64 / 3 + 0.95 * (64 - 64 / 3))
    # $3.60 an hour is $0.001 a second; 1,000 tokens at 32 tokens/s take 31.25 s.
    assert figures["cost_per_1k_tokens_usd"] == pytest.approx(0.03125)
    share = figures["peak_memory_bytes"] / figures["device_memory_bytes"]
    assert figures["peak_memory_share"] == pytest.approx(share) and 0 < share < 1
    assert figures["memory_measure"] == "process peak RSS"


def test_the_first_token_clock_starts_at_the_prompt_and_stops_at_the_first_new_token(
    monkeypatch,
):
    now = iter([100.0, 100.25])
    monkeypatch.setattr(serving.time, "perf_counter", lambda: next(now))
    clock = serving.FirstTokenClock()  # 100.0
    clock.put(torch.tensor([[1, 2, 3]]))  # generate hands over the prompt first
    assert clock.first is None
    clock.put(torch.tensor([4]))  # the first new token, at 100.25
    clock.put(torch.tensor([5]))
    assert clock.first == pytest.approx(0.25)
