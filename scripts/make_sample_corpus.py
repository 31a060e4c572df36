"""Regenerate the bundled sample corpus from CPython's ``pydoc_data`` topics.

The corpus is committed under ``llama_assets/sample_data/`` so that every machine
sees the same bytes (``pydoc_data`` changes between Python releases). It is real
text this project did not write (the Python documentation, PSF licence), spread
over two landing batches in every supported format, with planted problems so
that each stage has work to do:

- exact duplicate: a topic copied verbatim into batch 2 (removed across batches)
- near duplicate: a topic with about one word in a hundred replaced (removed)
- PII: e-mail, phone and an IP address in one record (masked downstream)
- bad records: invalid JSON line, empty text, wrong type, corrupt gzip,
  unsupported binary file (all quarantined with a reason)
- a document in German (language layer)

Run: ``python scripts/make_sample_corpus.py`` (idempotent).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import random
import shutil
from pathlib import Path
from pydoc_data.topics import topics

OUT = Path(__file__).resolve().parents[1] / "llama_assets" / "sample_data"


def _title(key: str, text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), key)
    return first[:120]


def _near_copy(text: str, seed: int) -> str:
    rng = random.Random(seed)
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, len(words) // 100)):
        words[i] = "variant"
    return " ".join(words)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    keys = sorted(topics)

    # Stable assignment of topics to batches and formats (hash, not position).
    def bucket(key: str, n: int) -> int:
        return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n

    part1 = [k for k in keys if bucket(k, 4) != 0]
    part2 = [k for k in keys if bucket(k, 4) == 0]

    for part, part_keys in (("part-1", part1), ("part-2", part2)):
        root = OUT / part
        jsonl_rows, csv_rows = [], []
        for key in part_keys:
            text = topics[key].strip()
            fmt = bucket(key + "fmt", 5)
            if fmt == 0:
                jsonl_rows.append({"id": key, "title": _title(key, text), "text": text})
            elif fmt == 1:
                path = root / "reference" / f"{key}.md"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"# {_title(key, text)}\n\n{text}\n", encoding="utf-8")
            elif fmt == 2:
                path = root / "html" / f"{key}.html"
                path.parent.mkdir(parents=True, exist_ok=True)
                paras = "".join(f"<p>{html.escape(p)}</p>\n" for p in text.split("\n\n"))
                path.write_text(
                    f"<html><head><title>{html.escape(_title(key, text))}</title>"
                    "<script>var tracking = 1;</script></head><body>"
                    "<nav>Home | Index | Modules</nav>"
                    f"<main><h1>{html.escape(_title(key, text))}</h1>\n{paras}</main>"
                    "<footer>Copyright Python Software Foundation</footer></body></html>\n",
                    encoding="utf-8",
                )
            elif fmt == 3:
                csv_rows.append({"title": _title(key, text), "text": text})
            else:
                path = root / "text" / f"{key}.rst"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text + "\n", encoding="utf-8")
        (root / "records").mkdir(parents=True, exist_ok=True)
        with (root / "records" / "topics.jsonl").open("w", encoding="utf-8") as f:
            for row in jsonl_rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["title", "text"])
        writer.writeheader()
        writer.writerows(csv_rows)
        (root / "records" / "topics.csv").write_text(buf.getvalue(), encoding="utf-8")

    # Planted problems.
    p1, p2 = OUT / "part-1", OUT / "part-2"
    # Long topics, so that the quality filter (at least 50 words) keeps both
    # copies and removing them is dedup's job.
    long_topics = [k for k in part1 if len(topics[k].split()) > 1000]
    dup_key, near_key = long_topics[0], long_topics[1]
    (p2 / "mirror").mkdir(parents=True, exist_ok=True)
    (p2 / "mirror" / f"{dup_key}-copy.txt").write_text(topics[dup_key].strip() + "\n")
    (p2 / "mirror" / f"{near_key}-edited.txt").write_text(
        _near_copy(topics[near_key].strip(), seed=7) + "\n"
    )
    pii_text = (
        topics[part1[11]].strip()
        + "\n\nQuestions about this page go to jane.doe@example.org or +1 415 555 0134;"
        " the staging server is 10.20.30.40."
    )
    bad = [
        json.dumps({"id": "pii", "title": "Contact", "text": pii_text}),
        '{"id": "broken", "text": "unterminated',
        json.dumps({"id": "empty", "text": "   "}),
        json.dumps({"id": "wrong-type", "text": 42}),
        json.dumps(
            {
                "id": "german",
                "text": (
                    "Die Funktion gibt eine Liste der Namen im aktuellen lokalen "
                    "Gültigkeitsbereich zurück. Wenn ein Argument angegeben ist, wird "
                    "versucht, eine Liste der gültigen Attribute für dieses Objekt "
                    "zurückzugeben. Das ist nicht immer vollständig, und die Liste ist "
                    "alphabetisch sortiert. Die Namen werden von der Methode bestimmt, "
                    "die das Objekt dafür bereitstellt, und sonst aus dem Wörterbuch "
                    "des Objekts und seiner Klasse gesammelt. Das Ergebnis ist für die "
                    "interaktive Arbeit gedacht und kann sich zwischen Versionen ändern."
                ),
            },
            ensure_ascii=False,
        ),
    ]
    (p1 / "records" / "submissions.jsonl").write_text("\n".join(bad) + "\n", encoding="utf-8")
    (p1 / "records" / "archive.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    (p1 / "attachments").mkdir(parents=True, exist_ok=True)
    (p1 / "attachments" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    # A valid gzip file so compressed input is exercised on the happy path.
    (p2 / "records" / "extra.jsonl.gz").write_bytes(
        gzip.compress(
            (
                json.dumps({"id": part2[0] + "-gz", "text": topics[part2[0]].strip()}) + "\n"
            ).encode(),
            mtime=0,
        )
    )
    print(f"wrote {sum(1 for _ in OUT.rglob('*') if _.is_file())} files under {OUT}")


if __name__ == "__main__":
    main()
