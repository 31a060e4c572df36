"""lm-evaluation-harness in-process on a tiny Llama: the shipped tasks, a user's local
task, and its bits per byte equal to the eval's own."""

from __future__ import annotations

import pytest

from evals.lm_harness import build_shipped_tasks, run_lm_eval
from evals.perplexity import document_loss
from llama_assets.training.base_model import build_tiny_llama
from llama_assets.training.tokenizer import train_bpe_tokenizer
from tests.unit.test_training import SMALL, synthetic_corpus

WINDOW = 32


def test_shipped_and_local_tasks_run_on_the_loaded_model(tmp_path):
    texts = synthetic_corpus(40, seed=3)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=SMALL.vocab_size)
    model = build_tiny_llama(SMALL, tokenizer, seed=0)
    task_dir = tmp_path / "tasks"
    sizes = build_shipped_tasks(texts, task_dir, cloze=12, documents=8)
    assert sizes == {"heldout_cloze": 12, "heldout_bpb": 8}

    # A user's own task: lm-eval YAML over a local file, found on the include path.
    user_dir = tmp_path / "user_tasks"
    user_dir.mkdir()
    (user_dir / "my_cloze.yaml").write_text(
        (task_dir / "heldout_cloze.yaml").read_text().replace("heldout_cloze\n", "my_cloze\n", 1)
    )
    scores = run_lm_eval(
        model,
        tokenizer,
        ["heldout_cloze", "heldout_bpb", "my_cloze"],
        [task_dir, user_dir],
        tmp_path / "cache",
        max_length=WINDOW,
        batch_size=4,
    )
    assert set(scores) == {"heldout_cloze", "heldout_bpb", "my_cloze"}
    cloze = scores["heldout_cloze"]
    assert cloze["samples"] == 12 and 0.0 <= cloze["acc"] <= 1.0 and "acc_norm" in cloze
    assert scores["my_cloze"]["acc"] == cloze["acc"]

    # The harness's bits per byte is the eval's own (same windows, same prefix token).
    docs = texts[:8]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in docs]
    ours = document_loss(model, ids, docs, "cpu", WINDOW, tokenizer.eos_token_id,
                         tokenizer.pad_token_id)  # fmt: skip
    assert scores["heldout_bpb"]["bits_per_byte"] == pytest.approx(ours.bits_per_byte, rel=1e-5)
    assert not any(tmp_path.joinpath("cache").glob("**/downloads/*"))
