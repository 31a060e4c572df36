"""Embedding drift: does a batch's text land somewhere else in embedding space?

Per batch a small summary is kept (`EmbeddingSummary`: the sum and count of its
vectors, and a deterministic sample of at most ``SAMPLE_SIZE`` of them; chunk ids
are content hashes, so the first ``SAMPLE_SIZE`` by chunk id are a pseudo-random
sample), so a baseline of many earlier batches costs their summaries, not
their vectors. Two tests, both without a trained model:

- the cosine distance between the mean embeddings (Evidently's ``distance``
  method, reported);
- the squared maximum mean discrepancy (MMD) with an RBF kernel (bandwidth by
  the median heuristic) between the samples, with a permutation p-value.

The batch drifts when MMD² exceeds ``MMD_THRESHOLD`` (Evidently's default for
its ``mmd`` method) *and* the permutation test finds it significant
(p < ``P_VALUE_THRESHOLD``), so neither a tiny-but-significant shift on a big
sample nor noise on a small one triggers a retrain. ``score`` is MMD² divided
by its threshold (above 1.0 is large enough to matter).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llama_assets.base.atomic import atomic_open
from llama_assets.base.store import Location

SAMPLE_SIZE = 512
MMD_THRESHOLD = 0.015
P_VALUE_THRESHOLD = 0.05
PERMUTATIONS = 200
MIN_VECTORS = 8
"""Fewer vectors than this on either side: no test (too few to say anything)."""


@dataclass
class EmbeddingSummary:
    vector_sum: np.ndarray
    count: int
    sample: np.ndarray

    @classmethod
    def of(cls, chunk_ids: list[str], vectors: np.ndarray) -> EmbeddingSummary:
        order = np.argsort(np.asarray(chunk_ids, dtype=object), kind="stable")[:SAMPLE_SIZE]
        vectors = np.asarray(vectors, dtype=np.float32)
        return cls(vectors.sum(axis=0, dtype=np.float64), len(vectors), vectors[order])

    def save(self, path: Location | Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, vector_sum=self.vector_sum, count=self.count, sample=self.sample)
        with atomic_open(path, "wb") as fh:
            fh.write(buffer.getvalue())

    @classmethod
    def load(cls, path: Location | Path) -> EmbeddingSummary:
        with np.load(io.BytesIO(path.read_bytes())) as data:
            return cls(data["vector_sum"], int(data["count"]), data["sample"])


def pool_summaries(summaries: list[EmbeddingSummary]) -> EmbeddingSummary | None:
    """The baseline of several batches: sums add; the samples are pooled and
    thinned evenly back to ``SAMPLE_SIZE``."""
    summaries = [s for s in summaries if s.count]
    if not summaries:
        return None
    sample = np.concatenate([s.sample for s in summaries])
    if len(sample) > SAMPLE_SIZE:
        sample = sample[np.linspace(0, len(sample) - 1, SAMPLE_SIZE).astype(int)]
    return EmbeddingSummary(
        np.sum([s.vector_sum for s in summaries], axis=0), sum(s.count for s in summaries), sample
    )


def mmd_squared(
    x: np.ndarray, y: np.ndarray, permutations: int = PERMUTATIONS
) -> tuple[float, float]:
    """Biased MMD² with an RBF kernel (median-heuristic bandwidth) and its
    permutation p-value (fixed seed: deterministic)."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off_diagonal = d2[np.triu_indices(len(z), k=1)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    k = np.exp(-d2 / bandwidth)
    n = len(x)

    def statistic(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        return float(k[np.ix_(a, a)].mean() + k[np.ix_(b, b)].mean() - 2 * k[np.ix_(a, b)].mean())

    observed = statistic(np.arange(len(z)))
    rng = np.random.default_rng(0)
    exceed = sum(statistic(rng.permutation(len(z))) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def embedding_drift(current: EmbeddingSummary, baseline: EmbeddingSummary | None) -> dict:
    if baseline is None or min(len(current.sample), len(baseline.sample)) < MIN_VECTORS:
        return {
            "baseline": None,
            "score": 0.0,
            "drifted": False,
            "note": "no baseline, or fewer than "
            f"{MIN_VECTORS} vectors on a side: nothing to compare",
        }
    a = current.vector_sum / current.count
    b = baseline.vector_sum / baseline.count
    cosine = 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
    mmd2, p_value = mmd_squared(current.sample, baseline.sample)
    return {
        "baseline_vectors": baseline.count,
        "mean_cosine_distance": cosine,
        "mmd2": mmd2,
        "mmd_threshold": MMD_THRESHOLD,
        "p_value": p_value,
        "p_value_threshold": P_VALUE_THRESHOLD,
        "score": mmd2 / MMD_THRESHOLD,
        "drifted": bool(mmd2 > MMD_THRESHOLD and p_value < P_VALUE_THRESHOLD),
    }
