import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import wasserstein_distance

from llama_assets.base.sources import SourcePolicy, drift_baseline_keys
from llama_assets.curate.profile import (
    ProfileAccumulator,
    drift,
    drift_report,
    jensen_shannon,
    pool_profiles,
    profile_documents,
    psi,
    wasserstein_normalised,
)


def frame(lengths: list[int], languages: list[str], **quality) -> pl.DataFrame:
    return pl.DataFrame(
        {"text": [" ".join(["w"] * n) for n in lengths], "language": languages, **quality}
    )


def test_identical_distributions_do_not_drift():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert jensen_shannon([5, 5], [50, 50]) == pytest.approx(0.0)


def test_disjoint_distributions_drift_to_the_maximum():
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-3)
    assert psi([1, 0], [0, 1]) > 10


def test_wasserstein_from_histograms_matches_scipy_on_the_raw_values():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.7, 20_000)
    cur = rng.uniform(0.35, 0.95, 20_000)
    p_ref = profile_documents(frame([60] * ref.size, ["en"] * ref.size, q_alpha_word_fraction=ref))
    p_cur = profile_documents(frame([60] * cur.size, ["en"] * cur.size, q_alpha_word_fraction=cur))
    got = wasserstein_normalised(
        p_ref["numeric"]["q_alpha_word_fraction"], p_cur["numeric"]["q_alpha_word_fraction"]
    )
    expected = wasserstein_distance(ref, cur) / ref.std()
    assert got == pytest.approx(expected, rel=0.03)
    same = wasserstein_normalised(
        p_ref["numeric"]["q_alpha_word_fraction"], p_ref["numeric"]["q_alpha_word_fraction"]
    )
    assert same == 0.0


def test_profile_streams_part_by_part_and_pools_exactly():
    whole = frame([60, 70, 80, 90, 300], ["en", "en", "de", "en", "fr"])
    parts = ProfileAccumulator().add(whole.head(2)).add(whole.slice(2)).result()
    assert parts == profile_documents(whole)
    pooled = pool_profiles([profile_documents(whole.head(2)), profile_documents(whole.slice(2))])
    assert pooled["numeric"]["length_words"]["counts"] == parts["numeric"]["length_words"]["counts"]
    assert pooled["languages"] == {"en": 3, "de": 1, "fr": 1}
    assert parts["length_words"]["p50"] == pytest.approx(80, abs=25)


def test_profile_and_drift_against_pooled_baseline():
    base = profile_documents(frame([60, 70, 80, 90], ["en"] * 4))
    assert base["documents"] == 4 and base["words"] == 300
    assert base["length_histogram"][1] == 4  # 50..100 words
    assert drift(base, None) == {"baseline": None, "score": 0.0, "drifted": False, "features": {}}
    same = drift(
        profile_documents(frame([60, 65, 70, 80, 85, 90], ["en"] * 6)), pool_profiles([base])
    )
    assert not same["drifted"] and same["score"] == 0.0
    shifted = drift(profile_documents(frame([3000, 4000], ["de", "de"])), pool_profiles([base]))
    assert shifted["drifted"] and shifted["score"] == 2.0  # every feature drifted / 0.5
    tests = {t["test"]: t for t in shifted["features"]["length_words"]["tests"]}
    assert tests["psi"]["drifted"] and tests["wasserstein"]["drifted"]
    assert shifted["features"]["language"]["drifted"]
    assert math.isfinite(shifted["score"])
    report = drift_report("s/b2", shifted)
    assert "**DRIFTED**" in report and "| length_words | wasserstein |" in report


def test_one_drifted_quality_signal_is_reported_but_does_not_drift_the_batch():
    n = 200
    rng = np.random.default_rng(1)
    base = profile_documents(
        frame(
            [80] * n,
            ["en"] * n,
            q_alpha_word_fraction=np.linspace(0.85, 1.0, n),
            q_duplicate_line_fraction=np.zeros(n),
        )
    )
    cur = profile_documents(
        frame(
            [80] * n,
            ["en"] * n,
            q_alpha_word_fraction=np.linspace(0.85, 1.0, n),
            q_duplicate_line_fraction=rng.uniform(0.2, 0.3, n),
        )
    )
    result = drift(cur, pool_profiles([base]))
    drifted = sorted(k for k, f in result["features"].items() if f["drifted"])
    assert drifted == ["q_duplicate_line_fraction"]
    assert not result["drifted"] and result["score"] == pytest.approx(0.25 / 0.5)


def test_baseline_is_rolling_or_pinned_per_source():
    earlier = ["s/b1", "other/x", "s/b2", "s/b3"]
    assert drift_baseline_keys(SourcePolicy(), "s/b4", earlier) == (
        ["s/b1", "s/b2", "s/b3"],
        "pooled earlier batches",
    )
    keys, _ = drift_baseline_keys(SourcePolicy(drift_window=2), "s/b4", earlier)
    assert keys == ["s/b2", "s/b3"]
    assert drift_baseline_keys(SourcePolicy(drift_baseline="pinned"), "s/b4", earlier)[0] == [
        "s/b1"
    ]
    pinned = SourcePolicy(drift_baseline="pinned", drift_baseline_batch="b2")
    assert drift_baseline_keys(pinned, "s/b4", earlier)[0] == ["s/b2"]
    assert drift_baseline_keys(pinned, "s/b2", ["s/b1"])[0] == []  # the pinned batch itself
