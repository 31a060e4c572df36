import math

import polars as pl
import pytest

from llama_assets.curate.profile import drift, jensen_shannon, pool_profiles, profile_documents, psi


def frame(lengths: list[int], languages: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"text": [" ".join(["w"] * n) for n in lengths], "language": languages})


def test_identical_distributions_do_not_drift():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert jensen_shannon([5, 5], [50, 50]) == pytest.approx(0.0)


def test_disjoint_distributions_drift_to_the_maximum():
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-3)
    assert psi([1, 0], [0, 1]) > 10


def test_profile_and_drift_against_pooled_baseline():
    base = profile_documents(frame([60, 70, 80, 90], ["en"] * 4))
    assert base["documents"] == 4 and base["words"] == 300
    assert base["length_histogram"][1] == 4  # 50..100 words
    assert drift(base, None) == {"baseline": None, "score": 0.0, "drifted": False, "features": {}}
    same = drift(profile_documents(frame([55, 65], ["en", "en"])), pool_profiles([base]))
    assert not same["drifted"] and same["score"] == pytest.approx(0.0, abs=1e-6)
    shifted = drift(profile_documents(frame([3000, 4000], ["de", "de"])), pool_profiles([base]))
    assert shifted["drifted"]
    assert (
        shifted["features"]["language"]["drifted"]
        and shifted["features"]["length_words"]["drifted"]
    )
    assert math.isfinite(shifted["score"]) and shifted["score"] > 1
