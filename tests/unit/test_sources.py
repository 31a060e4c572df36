"""Per-source policy from sources.toml: precedence and validation."""

from __future__ import annotations

import pytest

from llama_assets.base.sources import (
    DEFAULT_MAX_REJECT_RATE,
    SourcePolicy,
    SourcesConfigError,
    source_policy,
    sources_file,
)


def test_defaults_and_builtin_sample_source(tmp_path) -> None:
    missing = tmp_path / "sources.toml"
    assert source_policy("web", missing) == SourcePolicy(DEFAULT_MAX_REJECT_RATE, ("en",))
    assert source_policy("python-docs", missing).max_reject_rate == 0.10


def test_file_precedence(tmp_path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(
        '[default]\nmax_reject_rate = 0.02\nallowed_languages = ["en", "de"]\n'
        "[sources.web]\nmax_reject_rate = 0.2\n"
        "[sources.python-docs]\nmax_reject_rate = 0.5\n"
    )
    assert source_policy("web", path) == SourcePolicy(0.2, ("en", "de"))
    assert source_policy("other", path) == SourcePolicy(0.02, ("en", "de"))
    assert source_policy("python-docs", path).max_reject_rate == 0.5


@pytest.mark.parametrize(
    "text",
    [
        "[sources.web]\nmax_reject_rate = 2\n",
        "[default]\ntypo = 1\n",
        "not toml [",
        '[sources.web]\nlanguage = "English"\n',
        '[sources.web]\nuse_for_training = "no"\n',
        "[sources.web]\nreview_cap = -1\n",
        "[sources.web]\npart_rows = 0\n",
        "[sources.web]\ndrift_window = true\n",
    ],
)
def test_bad_file_is_an_error(tmp_path, text) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    with pytest.raises(SourcesConfigError):
        source_policy("web", path)


def test_env_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLAMA_SOURCES_FILE", str(tmp_path / "x.toml"))
    assert sources_file(tmp_path / "sources.toml") == tmp_path / "x.toml"


def test_language_uses_and_review_cap(tmp_path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(
        '[default]\nallowed_languages = ["de", "en"]\n'
        '[sources.crawl]\nlanguage = "und"\nuse_for_training = false\nreview_cap = 5\n'
        "[sources.private]\nuse_for_index = false\n"
    )
    crawl, private = source_policy("crawl", path), source_policy("private", path)
    assert (crawl.declared_language, crawl.use_for_training, crawl.review_cap) == ("und", False, 5)
    assert crawl.use_for_index
    assert (private.declared_language, private.use_for_index) == ("de", False)
    assert private.use_for_training and private.review_cap == 50


def test_part_rows_per_source(tmp_path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text("[sources.long]\npart_rows = 100\n")
    assert source_policy("long", path).part_rows == 100
    assert source_policy("other", path).part_rows == 10_000
