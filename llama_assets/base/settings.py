"""Where the embedded default keeps things, and how the environment overrides it.

Every entry point (the Dagster code location, the CLI, the Makefile) resolves
paths here, so ``LLAMA_DATA_ROOT`` and ``DAGSTER_HOME`` mean the same thing to
all of them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
LOCAL_INSTANCE_CONFIG = PROJECT_ROOT / "deploy" / "local" / "dagster.yaml"


def data_root() -> str:
    """``LLAMA_DATA_ROOT``: a local directory (absolute) or ``s3://bucket/prefix``;
    ``data/`` inside the checkout (git-ignored) when unset. Open it with
    ``base.store.open_root`` (or the ``storage`` resource, which gives S3 the
    client of dagster-aws's S3Resource)."""
    value = os.environ.get("LLAMA_DATA_ROOT", "").strip()
    if value.startswith("s3://"):
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve() if value else PROJECT_ROOT / "data")


def embedding_cache_dir() -> str:
    """``LLAMA_EMBEDDING_CACHE``: a folder (or ``s3://`` prefix) for the embedding
    cache shared by several data roots (a staging and a production root, a team's
    development roots); empty: each root keeps its own under ``cache/embeddings``.
    Entries are keyed by the model's fingerprint and the text's sha256, so roots
    that share it never mix models or texts."""
    value = os.environ.get("LLAMA_EMBEDDING_CACHE", "").strip()
    if not value or value.startswith("s3://"):
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def dagster_home() -> Path:
    """``DAGSTER_HOME``, or ``.dagster_home/`` inside the checkout (git-ignored)."""
    value = os.environ.get("DAGSTER_HOME", "").strip()
    return Path(value).expanduser().resolve() if value else PROJECT_ROOT / ".dagster_home"


def ensure_dagster_home() -> Path:
    """Create the instance directory with the local ``dagster.yaml`` if it has none.

    Sets ``DAGSTER_HOME`` for this process so that ``DagsterInstance.get()`` and
    child processes find the same SQLite instance the UI shows.
    """
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and LOCAL_INSTANCE_CONFIG.exists():
        shutil.copyfile(LOCAL_INSTANCE_CONFIG, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
