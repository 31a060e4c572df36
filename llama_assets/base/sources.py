"""Per-source data-quality policy: reject-rate limit, languages, uses, review cap.

Sources differ: a scraped web source tolerates more malformed records than a
curated export, and a multilingual source allows more languages. A user sets
these per source in ``<data root>/sources.toml`` (or the file that
``LLAMA_SOURCES_FILE`` names)::

    [default]                       # every source not listed below
    max_reject_rate = 0.01          # layer-1 reject share that fails the batch
    allowed_languages = ["en"]

    [sources.my-web-crawl]
    max_reject_rate = 0.05
    allowed_languages = ["en", "de", "fr"]
    language = "und"                # declares no language (default: the first allowed)
    use_for_training = false        # searchable (RAG index), never trained on
    review_cap = 20                 # at most 20 documents a batch held for a person
    drift_baseline = "rolling"      # earlier batches of the source, pooled
    drift_window = 5                # ... only the last 5 (0 = all of them)
    part_rows = 1000                # records per part (very long documents)

    [sources.curated]
    drift_baseline = "pinned"       # always compare with one batch:
    drift_baseline_batch = "2024-01"   # this one (default: the source's first)

Precedence, per key: the file's ``[sources.<name>]`` table, then a built-in
entry for that source, then the file's ``[default]``, then the defaults below.
The bundled sample source (``python-docs``) plants ~7% malformed records in
its first batch on purpose, so it has a built-in limit of 10%; a
``[sources.python-docs]`` table in the file overrides it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from llama_assets.base.shards import DEFAULT_MAX_ROWS
from llama_assets.base.store import Location

DEFAULT_MAX_REJECT_RATE = 0.01
"""Share of a batch's records that layer 1 (schema) may reject before the
blocking `reject_rate_within_limit` check fails the batch."""

DEFAULT_ALLOWED_LANGUAGES = ("en",)

SOURCES_FILE_ENV = "LLAMA_SOURCES_FILE"


DRIFT_BASELINES = ("rolling", "pinned")


DEFAULT_REVIEW_CAP = 50
"""Documents of a batch held for a person's review at most; more are decided by
the rule as it stands (a held document fails it). About what one person
reviews in a sitting."""

UNDETERMINED = "und"
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class SourcePolicy:
    max_reject_rate: float = DEFAULT_MAX_REJECT_RATE
    allowed_languages: tuple[str, ...] = DEFAULT_ALLOWED_LANGUAGES
    language: str = ""
    """The language the source is written in: a page too short or too code-heavy
    for language identification takes it. Empty: the first allowed language;
    ``und``: none (such a page is undetermined)."""
    use_for_index: bool = True
    """Valid documents of the source reach the RAG index."""
    use_for_training: bool = True
    """Documents of the source that pass the quality rules reach the training dataset."""
    review_cap: int = DEFAULT_REVIEW_CAP
    """Borderline documents held for review per batch, at most (0: none held)."""
    drift_baseline: str = "rolling"
    """``rolling``: earlier batches of the source pooled; ``pinned``: one batch."""
    drift_window: int = 0
    """Rolling baseline: only the last N earlier batches (0 = every earlier batch)."""
    drift_baseline_batch: str = ""
    """Pinned baseline: the batch to compare with (empty = the source's first batch)."""
    part_rows: int = DEFAULT_MAX_ROWS
    """Records per part of the batch's tables up to its clean shards: each stage holds
    a few parts at once, so lower it for a source of very long documents."""

    @property
    def declared_language(self) -> str:
        """`language`, or the first allowed language when it is empty."""
        if self.language:
            return self.language
        return self.allowed_languages[0] if self.allowed_languages else UNDETERMINED


BUILTIN_OVERRIDES: dict[str, dict] = {
    # The sample corpus plants ~7% bad records in part-1 to exercise quarantine.
    "python-docs": {"max_reject_rate": 0.10},
}


class SourcesConfigError(ValueError):
    """sources.toml is malformed."""


def _overrides(table: object, where: str) -> dict:
    if not isinstance(table, dict):
        raise SourcesConfigError(f"{where} must be a table")
    known = {f.name for f in fields(SourcePolicy)}
    unknown = set(table) - known
    if unknown:
        raise SourcesConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    out: dict = {}
    if "max_reject_rate" in table:
        rate = table["max_reject_rate"]
        if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise SourcesConfigError(f"{where}.max_reject_rate must be a number in [0, 1]")
        out["max_reject_rate"] = float(rate)
    if "allowed_languages" in table:
        langs = table["allowed_languages"]
        if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
            raise SourcesConfigError(f"{where}.allowed_languages must be a list of codes")
        out["allowed_languages"] = tuple(langs)
    if "language" in table:
        language = table["language"]
        if not isinstance(language, str) or not _LANGUAGE_CODE.match(language):
            raise SourcesConfigError(f'{where}.language must be a language code such as "en"')
        out["language"] = language
    for key in ("use_for_index", "use_for_training"):
        if key in table:
            if not isinstance(table[key], bool):
                raise SourcesConfigError(f"{where}.{key} must be true or false")
            out[key] = table[key]
    for key, low in (("review_cap", 0), ("part_rows", 1), ("drift_window", 0)):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SourcesConfigError(f"{where}.{key} must be an integer >= {low}")
            out[key] = value
    if "drift_baseline" in table:
        if table["drift_baseline"] not in DRIFT_BASELINES:
            raise SourcesConfigError(f"{where}.drift_baseline must be one of {DRIFT_BASELINES}")
        out["drift_baseline"] = table["drift_baseline"]
    if "drift_baseline_batch" in table:
        if not isinstance(table["drift_baseline_batch"], str):
            raise SourcesConfigError(f"{where}.drift_baseline_batch must be a batch name")
        out["drift_baseline_batch"] = table["drift_baseline_batch"]
    return out


def sources_file(default: Location | Path) -> Location | Path:
    """The file ``LLAMA_SOURCES_FILE`` names, else `default` (``<root>/sources.toml``)."""
    value = os.environ.get(SOURCES_FILE_ENV, "").strip()
    return Path(value).expanduser() if value else default


def source_policy(source: str, config_file: Location | Path | None) -> SourcePolicy:
    """The policy of `source` (see the module docstring for the precedence)."""
    data: dict = {}
    if config_file is not None and config_file.is_file():
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SourcesConfigError(f"{config_file}: {exc}") from exc
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise SourcesConfigError("[sources] must be a table of tables")
    policy = replace(SourcePolicy(), **_overrides(data.get("default", {}), "default"))
    policy = replace(policy, **BUILTIN_OVERRIDES.get(source, {}))
    return replace(policy, **_overrides(sources.get(source, {}), f"sources.{source}"))


def drift_baseline_keys(
    policy: SourcePolicy, key: str, earlier: list[str]
) -> tuple[list[str], str]:
    """The batch keys whose profiles form `key`'s drift baseline, and its name.

    `earlier` are the batches registered before `key` (any source), oldest first.
    Only the same source's batches count: a source drifts against itself. A
    pinned baseline is never the batch itself (the pinned batch has none).
    """
    source = key.partition("/")[0]
    same = [k for k in earlier if k.partition("/")[0] == source]
    if policy.drift_baseline == "pinned":
        pinned = f"{source}/{policy.drift_baseline_batch}" if policy.drift_baseline_batch else None
        target = pinned or (same[0] if same else None)
        if target is None or target == key or target not in same:
            return [], f"pinned {target}"
        return [target], f"pinned {target}"
    if policy.drift_window:
        same = same[-policy.drift_window :]
        return same, f"rolling: last {policy.drift_window} earlier batches pooled"
    return same, "pooled earlier batches"
