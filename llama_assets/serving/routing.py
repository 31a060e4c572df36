"""The routing state the gateway follows, and how a request picks a version.

`serving/<variant>/deployment.json` (written atomically by the
`serving_deployment` asset, the only writer) names the stable version, the
canary (or the blue-green preview) and the share of traffic it gets. The
gateway re-reads the file when it changes and swaps its route in one
assignment, so every request sees either the old route or the new one (the
blue-green switch is that one write: the preview's weight goes from 0 to 100).

A user is sticky: `bucket(user)` hashes the user with the canary's version into
0..9999 and the canary takes the buckets below its weight, so as the weight
grows every user already on the canary stays there, and a new canary reshuffles.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.store import Location, as_location

BUCKETS = 10_000
STATE_FORMAT = 1

STRATEGY_CANARY = "canary"
STRATEGY_BLUE_GREEN = "blue_green"

# The rollout's status, after Argo Rollouts' phases.
IDLE = "idle"  # only a stable version
PROGRESSING = "progressing"  # a canary takes its stage's weight
PAUSED = "paused"  # an inconclusive judgement: a person decides
ABORTED = "aborted"  # the canary failed and is at 0%
PROMOTED = "promoted"  # the canary reached 100% and is the stable version


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RouteState:
    variant: str
    stable: str | None = None
    canary: str | None = None
    canary_weight: float = 0.0  # percent of traffic, 0..100
    strategy: str = STRATEGY_CANARY
    stage: int = 0
    status: str = IDLE
    reason: str = ""
    revision: int = 0
    updated_at: str = field(default_factory=now_iso)
    stage_started_at: str = field(default_factory=now_iso)
    rollout_started_at: str | None = None  # when the current canary or preview appeared
    switched_at: str | None = None  # blue-green: when the preview took all traffic
    policy: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()

    @property
    def versions(self) -> list[str]:
        """The versions that need a backend: the stable one and the canary, if any."""
        return [v for v in (self.stable, self.canary) if v]

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self), "history": list(self.history)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouteState:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**data, "history": tuple(data.get("history", ()))})

    def moved(
        self, action: str, reason: str, version: str | None = None, **changes: Any
    ) -> RouteState:
        """The next state: `changes` applied, revision + 1, the move (of `version`)
        appended to history."""
        at = now_iso()
        entry = {
            "revision": self.revision + 1,
            "action": action,
            "version": version,
            "reason": reason,
            "at": at,
            "stable": changes.get("stable", self.stable),
            "canary": changes.get("canary", self.canary),
            "canary_weight": changes.get("canary_weight", self.canary_weight),
            "stage": changes.get("stage", self.stage),
            "status": changes.get("status", self.status),
        }
        return replace(
            self,
            **changes,
            reason=reason,
            revision=self.revision + 1,
            updated_at=at,
            history=(*self.history, entry),
        )


def read_state(path: Location | Path, variant: str) -> RouteState:
    """The routing state at `path` (on a local or an S3 data root), or an empty
    one (no version yet)."""
    path = as_location(path)
    if not path.is_file():
        return RouteState(variant=variant)
    return RouteState.from_json(json.loads(path.read_text()))


def write_state(path: Location | Path, state: RouteState) -> None:
    atomic_write_json(as_location(path), state.to_json())


def bucket(user: str, salt: str) -> int:
    digest = hashlib.sha256(f"{salt}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_version(
    state: RouteState,
    user: str | None,
    up: set[str],
    canary_weight: float | None = None,
    rng: random.Random | None = None,
) -> tuple[str | None, str]:
    """(version, role) for one request; role is "stable" or "canary".

    `canary_weight` overrides the state's (the gateway's trip sets it to 0). A
    version whose backend is down is skipped while the other is up, so a dead
    backend takes no traffic between its probe failing and the next rollout move.
    """
    weight = state.canary_weight if canary_weight is None else canary_weight
    canary, stable = state.canary, state.stable
    if canary and weight > 0:
        if user is None:
            b = (rng or random).randrange(BUCKETS)
        else:
            b = bucket(user, f"{state.variant}:{canary}")
        wants_canary = b < weight * BUCKETS / 100
    else:
        wants_canary = False
    if wants_canary and (canary in up or stable not in up):
        return canary, "canary"
    if stable and (stable in up or canary not in up or weight <= 0):
        return stable, "stable"
    if canary:
        return canary, "canary"
    return None, "stable"
