"""The champion alias of each variant, with its full history.

``models/<variant>/aliases.json`` holds the current champion, the release
candidate (a version that passed the gate and is being rolled out; the alias
moves to it only when its rollout reaches 100%) and every move of the alias
(candidate, promotion or rollback), newest last, so a rollback is a single
atomic rewrite of one small file and nothing is ever deleted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from llama_assets.base.atomic import atomic_write_json


class RollbackError(RuntimeError):
    pass


def read_aliases(path: Path) -> dict:
    if not path.exists():
        return {"champion": None, "history": []}
    return json.loads(path.read_text())


def _move(path: Path, version: str, action: str, reason: str) -> dict:
    aliases = read_aliases(path)
    aliases["history"].append(
        {
            "version": version,
            "action": action,
            "reason": reason,
            "previous": aliases["champion"],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    aliases["champion"] = version
    if aliases.get("candidate") == version:
        aliases["candidate"] = None
    atomic_write_json(path, aliases)
    return aliases


def promote(path: Path, version: str, reason: str) -> dict:
    return _move(path, version, "promote", reason)


def previous_champion(aliases: dict) -> str | None:
    """The champion that the current one replaced when it was promoted (None: the first)."""
    current = aliases["champion"]
    for entry in reversed(aliases["history"]):
        if entry["action"] == "promote" and entry["version"] == current:
            return entry["previous"] if entry["previous"] != current else None
    return None


def nominate(path: Path, version: str, reason: str) -> dict:
    """Make `version` the release candidate; the champion stays until its rollout ends."""
    aliases = read_aliases(path)
    aliases["history"].append(
        {
            "version": version,
            "action": "candidate",
            "reason": reason,
            "previous": aliases["champion"],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    aliases["candidate"] = version
    atomic_write_json(path, aliases)
    return aliases


def rollback(path: Path, reason: str = "manual rollback") -> dict:
    """Point the alias back at the champion before the current one."""
    aliases = read_aliases(path)
    current = aliases["champion"]
    if current is None:
        raise RollbackError(f"{path}: there is no champion to roll back")
    previous = previous_champion(aliases)
    if previous is None:
        raise RollbackError(f"{path}: {current} is the first champion; nothing to roll back to")
    return _move(path, previous, "rollback", reason)


def withdraw(path: Path, version: str, reason: str) -> dict:
    """`version` is no longer the release candidate (its rollout was rolled back)."""
    aliases = read_aliases(path)
    if aliases.get("candidate") != version:
        return aliases
    aliases["history"].append(
        {
            "version": version,
            "action": "withdraw",
            "reason": reason,
            "previous": aliases["champion"],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    aliases["candidate"] = None
    atomic_write_json(path, aliases)
    return aliases
