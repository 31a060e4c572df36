"""Test corpora: real Python-docs topics and landing batches written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

from llama_assets.base.layout import DataLayout

# Long English topics of the Python docs: real text that passes every filter.
TOPIC_KEYS = sorted(k for k, v in topics.items() if len(v.split()) > 400)


# A paragraph in German, for the language layer.
GERMAN = (
    "Die Funktion gibt eine Liste der Namen im aktuellen lokalen Gültigkeitsbereich zurück. "
    "Wenn ein Argument angegeben ist, wird versucht, eine Liste der gültigen Attribute für "
    "dieses Objekt zurückzugeben. Das ist nicht immer vollständig, und die Liste ist "
    "alphabetisch sortiert. Die Namen werden von der Methode bestimmt, die das Objekt dafür "
    "bereitstellt, und sonst aus dem Wörterbuch des Objekts und seiner Klasse gesammelt."
)


def topic(i: int) -> str:
    return topics[TOPIC_KEYS[i]].strip()


def land(layout: DataLayout, key: str, files: dict[str, str | bytes]) -> Path:
    """Write a landing batch: {relative path: text or bytes}."""
    root = layout.landing_batch(key)
    for rel, content in files.items():
        path = root / rel
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root.local or root


def jsonl(*records: dict | str) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def part(table, index: int = 0):
    """The `index`-th part of a shard set (under the version prefix its manifest names)."""
    from llama_assets.base.shards import read_manifest

    found = table / read_manifest(table)["shards"][index]["file"]
    return found.local or found
