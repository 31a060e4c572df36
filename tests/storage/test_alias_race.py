"""Two promotions racing on one champion alias: one winner per round, intact history,
on a local root and on S3 (compare-and-swap through conditional writes)."""

from __future__ import annotations

import threading

import pytest

from llama_assets.base.store import Location, open_root
from llama_assets.deployment.registry import moved, promote, read_aliases, update_aliases


@pytest.fixture(params=["local", "s3"])
def aliases(request, tmp_path) -> Location:
    if request.param == "local":
        return open_root(tmp_path) / "models" / "tiny" / "aliases.json"
    return open_root(request.getfixturevalue("s3_uri")) / "models" / "tiny" / "aliases.json"


def test_two_promotions_that_read_the_same_champion(aliases):
    promote(aliases, "v0", "first")
    both_read = threading.Barrier(2)
    seen: list[tuple[str, str]] = []

    def promotion(version: str):
        first_round = [True]

        def decide(current: dict) -> dict:
            seen.append((version, current["champion"]))
            if first_round[0]:
                first_round[0] = False
                both_read.wait(10)  # both decided on v0 before either writes
            return moved(current, version, "promote", f"beats {current['champion']}")

        update_aliases(aliases, decide)

    threads = [threading.Thread(target=promotion, args=(v,)) for v in ("v1", "v2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    final = read_aliases(aliases)
    history = final["history"]
    assert [h["version"] for h in history][:1] == ["v0"] and len(history) == 3
    # The loser lost one round, then decided again on the winner's alias.
    winner, loser = history[1]["version"], history[2]["version"]
    assert {winner, loser} == {"v1", "v2"}
    assert history[1]["previous"] == "v0" and history[2]["previous"] == winner
    assert final["champion"] == loser
    assert sorted(seen) == sorted([("v1", "v0"), ("v2", "v0"), (loser, winner)])


def test_the_same_version_promoted_twice_at_once_is_one_move(aliases):
    promote(aliases, "v0", "first")
    start = threading.Barrier(4)

    def promotion():
        def decide(current: dict) -> dict | None:
            if current["champion"] == "v1":
                return None  # already champion: no move
            return moved(current, "v1", "promote", "better")

        start.wait(10)
        update_aliases(aliases, decide)

    threads = [threading.Thread(target=promotion) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [h["version"] for h in read_aliases(aliases)["history"]] == ["v0", "v1"]
