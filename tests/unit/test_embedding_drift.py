import numpy as np

from llama_assets.curate.embedding_drift import (
    SAMPLE_SIZE,
    EmbeddingSummary,
    embedding_drift,
    pool_summaries,
)


def unit_vectors(rng, n: int, centre: np.ndarray, spread: float) -> np.ndarray:
    v = centre + spread * rng.standard_normal((n, centre.size))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def summary(vectors: np.ndarray, prefix: str) -> EmbeddingSummary:
    return EmbeddingSummary.of([f"{prefix}{i:05d}" for i in range(len(vectors))], vectors)


def test_same_distribution_does_not_drift_and_a_shifted_one_does(tmp_path):
    rng = np.random.default_rng(0)
    dim = 32
    a, b = np.eye(dim)[0], np.eye(dim)[1]
    base = pool_summaries(
        [summary(unit_vectors(rng, 400, a, 0.3), "x"), summary(unit_vectors(rng, 400, a, 0.3), "y")]
    )
    assert base.count == 800 and len(base.sample) == SAMPLE_SIZE
    same = embedding_drift(summary(unit_vectors(rng, 300, a, 0.3), "z"), base)
    assert not same["drifted"] and same["p_value"] > 0.05
    moved = summary(unit_vectors(rng, 300, (a + b) / np.sqrt(2), 0.3), "m")
    shifted = embedding_drift(moved, base)
    assert shifted["drifted"] and shifted["score"] > 1 and shifted["p_value"] < 0.05
    assert shifted["mean_cosine_distance"] > same["mean_cosine_distance"]
    # Summaries round-trip through their file, and the test is deterministic.
    moved.save(tmp_path / "m.npz")
    assert embedding_drift(EmbeddingSummary.load(tmp_path / "m.npz"), base) == shifted


def test_no_baseline_or_too_few_vectors_is_not_drift():
    rng = np.random.default_rng(1)
    one = summary(unit_vectors(rng, 3, np.eye(8)[0], 0.1), "a")
    assert not embedding_drift(one, None)["drifted"]
    assert not embedding_drift(one, pool_summaries([one]))["drifted"]
