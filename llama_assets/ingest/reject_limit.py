"""The reject limit's verdict, as the sentence a person reads when a batch stops."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def reject_limit_verdict(
    key: str,
    rejected: int,
    total: int,
    limit: float,
    quarantine: Path,
    sources: Path,
    reasons: Mapping[str, int],
) -> str:
    """One sentence: within the limit, or which batch stopped, why, and the fix."""
    rate = rejected / total if total else 0.0
    if rate <= limit:
        return (
            f"batch {key}: {rejected} of {total} records rejected ({rate:.1%}), "
            f"within its {limit:.1%} limit"
        )
    top = ", ".join(
        f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda r: -r[1])[:3]
    )
    source = key.split("/", 1)[0]
    return (
        f"batch {key} stopped: {rejected} of {total} records were rejected ({rate:.1%}; {top}), "
        f"over its source's limit of {limit:.1%}. "
        f"The rejects and their reasons are in {quarantine}. "
        f"Fix the input and land it again, or raise the limit with `max_reject_rate = "
        f"{_suggested(rate)}` under [sources.{source}] in {sources}, then run again."
    )


def _suggested(rate: float) -> str:
    """A limit just above `rate`, rounded up to a readable step."""
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
        if rate <= step:
            return f"{step:g}"
    return "1.0"
