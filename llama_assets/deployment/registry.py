"""The champion alias of each variant, with its full history.

``models/<variant>/aliases.json`` holds the current champion, the release
candidate (a version that passed the gate and is being rolled out; the alias
moves to it only when its rollout reaches 100%) and every move of the alias
(candidate, promotion, withdrawal or rollback), newest last, so a rollback is a
single rewrite of one small file and nothing is ever deleted.

Every move is a compare-and-swap (base/store.py conditional writes, on a local
root and on S3 alike): read the file and its etag, decide, write with
``If-Match`` (``If-None-Match: *`` for the first), and on a conflict read
again and decide again. Two promotions racing on the same alias therefore
leave one champion and a history holding both moves in the order they won,
wherever the run workers are.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.store import Location, PreconditionFailed, as_location

MAX_ATTEMPTS = 50
"""Compare-and-swap rounds before giving up (each loses only to another move)."""


class RollbackError(RuntimeError):
    pass


class AliasContentionError(RuntimeError):
    pass


def _empty() -> dict:
    return {"champion": None, "history": []}


def read_aliases_with_etag(path: Location | Path) -> tuple[dict, str | None]:
    path = as_location(path)
    try:
        data, etag = path.store.get_with_etag(path.key)
    except FileNotFoundError:
        return _empty(), None
    return json.loads(data), etag


def read_aliases(path: Location | Path) -> dict:
    return read_aliases_with_etag(path)[0]


def update_aliases(path: Location | Path, change: Callable[[dict], dict | None]) -> dict:
    """Apply `change` (current aliases -> new aliases, or None for no move) as a
    compare-and-swap; `change` runs again on the fresh state after a conflict.
    Returns the aliases as they stand after this call."""
    path = as_location(path)
    for attempt in range(MAX_ATTEMPTS):
        current, etag = read_aliases_with_etag(path)
        new = change(copy.deepcopy(current))
        if new is None:
            return current
        data = (json.dumps(new, indent=2, sort_keys=True) + "\n").encode()
        try:
            if etag is None:
                path.store.put(path.key, data, if_none_match=True)
            else:
                path.store.put(path.key, data, if_match=etag)
            return new
        except PreconditionFailed:
            # Another move won this round: back off a little (jittered), then decide again.
            time.sleep(random.uniform(0, 0.05 * min(attempt + 1, 10)))
    raise AliasContentionError(f"{path}: {MAX_ATTEMPTS} moves in a row lost to other writers")


def _record(aliases: dict, version: str, action: str, reason: str) -> None:
    """Append a move to the history (made before the move: `previous` is the champion)."""
    aliases["history"].append(
        {
            "version": version,
            "action": action,
            "reason": reason,
            "previous": aliases["champion"],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def moved(aliases: dict, version: str, action: str, reason: str) -> dict:
    """`aliases` with the champion moved to `version`, the move appended to history."""
    _record(aliases, version, action, reason)
    aliases["champion"] = version
    if aliases.get("candidate") == version:
        aliases["candidate"] = None
    return aliases


def promote(path: Location | Path, version: str, reason: str) -> dict:
    return update_aliases(path, lambda aliases: moved(aliases, version, "promote", reason))


def previous_champion(aliases: dict) -> str | None:
    """The champion that the current one replaced when it was promoted (None: the first)."""
    current = aliases["champion"]
    for entry in reversed(aliases["history"]):
        if entry["action"] == "promote" and entry["version"] == current:
            return entry["previous"] if entry["previous"] != current else None
    return None


def nominate(path: Location | Path, version: str, reason: str) -> dict:
    """Make `version` the release candidate; the champion stays until its rollout ends."""
    return update_aliases(path, lambda aliases: candidate_moved(aliases, version, reason))


def candidate_moved(aliases: dict, version: str, reason: str) -> dict:
    """`aliases` with `version` as the release candidate, the move appended to history."""
    _record(aliases, version, "candidate", reason)
    aliases["candidate"] = version
    return aliases


def rollback(path: Location | Path, reason: str = "manual rollback") -> dict:
    """Point the alias back at the champion before the current one."""

    def back(aliases: dict) -> dict:
        current = aliases["champion"]
        if current is None:
            raise RollbackError(f"{path}: there is no champion to roll back")
        previous = previous_champion(aliases)
        if previous is None:
            raise RollbackError(f"{path}: {current} is the first champion; nothing to roll back to")
        return moved(aliases, previous, "rollback", reason)

    return update_aliases(path, back)


def withdraw(path: Location | Path, version: str, reason: str) -> dict:
    """`version` is no longer the release candidate (its rollout was rolled back)."""

    def withdrawn(aliases: dict) -> dict | None:
        if aliases.get("candidate") != version:
            return None
        _record(aliases, version, "withdraw", reason)
        aliases["candidate"] = None
        return aliases

    return update_aliases(path, withdrawn)
