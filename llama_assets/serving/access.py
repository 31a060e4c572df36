"""Who may call the gateway, and how often: API keys and a token bucket per key.

Keys live in a JSON file the operator writes (`--keys FILE`); it holds only the
sha256 of each secret, never the secret:

    {"keys": [{"name": "team-a", "sha256": "<hex>", "requests_per_minute": 600,
               "burst": 20, "log_prompts": false, "admin": false}]}

Without a keys file the gateway answers anyone, which is safe only on a
loopback address: `check_bind` refuses any other address without keys.
`admin` keys may read the rollout samples and pin a version (pre-switch tests);
`log_prompts` opts a key into raw prompts in the logs (hashes otherwise).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ANONYMOUS = "anonymous"


class AccessError(RuntimeError):
    """A configuration that must not run (an open gateway on a public address)."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    requests_per_minute: float = 600.0
    burst: int = 20
    log_prompts: bool = False
    admin: bool = False


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def load_keys(path: Path) -> dict[str, ApiKey]:
    """The keys of `path`, by sha256; a readable error for a malformed file."""
    try:
        entries = json.loads(Path(path).read_text())["keys"]
        keys = [ApiKey(**entry) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AccessError(
            f"{path}: not a keys file ({exc}); expected "
            '{"keys": [{"name": ..., "sha256": ..., "requests_per_minute": ...}]}'
        ) from exc
    if not keys:
        raise AccessError(f"{path} lists no key")
    return {key.sha256: key for key in keys}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: dict[str, ApiKey] | None) -> None:
    if not keys and not is_loopback(host):
        raise AccessError(
            f"refusing to serve on {host} without API keys: pass --keys FILE (or bind 127.0.0.1)"
        )


BEHIND_PROXY = "--behind-authenticating-proxy"
"""The flag of a server without authentication of its own (the Dagster UI, a
model backend): a non-loopback bind is allowed only when it says a proxy that
authenticates every request stands in front."""


def check_unauthenticated_bind(host: str, what: str, behind_proxy: bool) -> None:
    """`what` has no authentication of its own: loopback only, unless the operator
    says an authenticating proxy is in front."""
    if not behind_proxy and not is_loopback(host):
        raise AccessError(
            f"refusing to serve {what} on {host}: it has no authentication of its own. "
            f"Bind 127.0.0.1 (the default), or put an authenticating proxy in front and "
            f"pass {BEHIND_PROXY}"
        )


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RateLimiter:
    """A token bucket per key: `requests_per_minute` refill, `burst` capacity."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: ApiKey, now: float | None = None) -> float:
        """0.0 when the request may go; otherwise the seconds until it could."""
        now = time.monotonic() if now is None else now
        rate = key.requests_per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key.name, (float(key.burst), now))
            tokens = min(float(key.burst), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key.name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key.name] = (tokens, now)
            return (1.0 - tokens) / rate if rate > 0 else float("inf")
