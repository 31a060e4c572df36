"""Hostile landing zones: links, FIFOs and bad folder names never read, never fatal.

Each test reproduces what an attack on the platform found: symlinks were
followed (``/etc/passwd`` text reached the staging tables and quarantine), a
FIFO blocked ``raw_documents`` forever, and one badly named folder stopped the
landing sensor and every batch after it.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from llama_assets.base.layout import check_segment
from llama_assets.base.rejects import Reject
from llama_assets.ingest.landing import add_to_landing, scan_landing
from llama_assets.ingest.readers import iter_batch
from resources.storage import LocalDataRoot
from sensors.landing import landing_zone_sensor
from tests.landing import land, topic

SECRET = "root:x:0:0:SECRET-OUTSIDE-THE-ROOT:/root:/bin/bash"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file and a folder outside the landing batch, holding a secret."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd.txt").write_text(SECRET)
    return folder


def _read(batch_dir: Path) -> tuple[list, list[Reject]]:
    items = list(iter_batch(batch_dir, "src", "b1"))
    return [i for i in items if not isinstance(i, Reject)], [
        i for i in items if isinstance(i, Reject)
    ]


def test_links_inside_a_batch_are_rejected_never_followed(layout, outside):
    batch = land(layout, "src/b1", {"ok.txt": topic(0)})
    (batch / "file_link.txt").symlink_to(outside / "passwd.txt")
    (batch / "folder_link").symlink_to(outside, target_is_directory=True)
    docs, rejects = _read(batch)
    assert [d.path for d in docs] == ["ok.txt"]
    assert {(r.path, r.reason) for r in rejects} == {
        ("file_link.txt", "symlink_not_followed"),
        ("folder_link", "symlink_not_followed"),
    }
    assert all(SECRET not in (r.excerpt or "") for r in rejects)


def test_fifo_and_device_files_are_skipped_with_a_reason(layout):
    batch = land(layout, "src/b1", {"ok.txt": topic(0)})
    os.mkfifo(batch / "blocks_forever.txt")
    docs, rejects = _read(batch)  # would block forever if the FIFO were opened
    assert [d.path for d in docs] == ["ok.txt"]
    assert [(r.path, r.reason) for r in rejects] == [("blocks_forever.txt", "not_a_regular_file")]


def test_ingest_copies_links_as_links(tmp_path, layout, outside):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(topic(1))
    (folder / "evil.txt").symlink_to(outside / "passwd.txt")
    key = add_to_landing(folder, layout.landing, "src", "b1")
    copied = layout.landing_batch(key).local / "evil.txt"
    assert copied.is_symlink()  # the target's bytes were never copied in
    _, rejects = _read(layout.landing_batch(key))
    assert [r.reason for r in rejects] == ["symlink_not_followed"]
    # A link given directly is copied as a link too.
    key2 = add_to_landing(folder / "evil.txt", layout.landing, "src", "b2")
    assert (layout.landing_batch(key2).local / "evil.txt").is_symlink()


def test_bad_folders_are_reported_and_the_other_batches_go_on(layout, outside):
    land(layout, "src/b1", {"a.txt": topic(0)})
    land(layout, "src/b3", {"a.txt": topic(1)})
    (layout.landing / "src" / "bad name").mkdir()
    (layout.landing / "src" / "b2\n").mkdir()
    (layout.landing.local / "src" / "linked").symlink_to(outside, target_is_directory=True)
    (layout.landing.local / "evil-source").symlink_to(outside, target_is_directory=True)
    scan = scan_landing(layout.landing)
    assert scan.keys == ["src/b1", "src/b3"]
    reasons = {p.path: p.reason for p in scan.problems}
    assert set(reasons) == {"src/bad name", "src/b2\\n", "src/linked", "evil-source"}
    assert "rename the folder" in reasons["src/bad name"]
    assert "never followed" in reasons["evil-source"]


def test_the_landing_sensor_skips_bad_folders(layout, instance, monkeypatch):
    monkeypatch.setenv("LLAMA_COALESCE_WINDOW_SECONDS", "0")
    land(layout, "src/b1", {"a.txt": topic(0)})
    (layout.landing / "src" / "b0 bad").mkdir()
    context = dg.build_sensor_context(instance=instance)
    result = landing_zone_sensor(context, storage=LocalDataRoot(root=str(layout.root)))
    assert [r.partition_key for r in result.run_requests] == ["src/b1"]


@pytest.mark.parametrize(
    "name", ["b1\n", "..", "a/b", "/etc", "x" * 129, "bätch", "b\x00", "b\x1b[31m", "", ".hidden"]
)
def test_names_that_escape_or_hide_are_refused(name):
    with pytest.raises(ValueError, match="invalid batch name"):
        check_segment(name, "batch")


def test_links_never_reach_the_staging_table(layout, outside, resources, instance):
    """End to end through `raw_documents`: the secret is in no table nor quarantine."""
    from llama_assets.ingest.assets import raw_documents

    batch = land(layout, "src/b1", {f"{i}.txt": topic(i) for i in range(6)})
    (batch / "p.txt").symlink_to(outside / "passwd.txt")
    instance.add_dynamic_partitions("batches", ["src/b1"])
    # One reject in 7 trips the 1% reject limit: the check fails, the tables stand.
    result = dg.materialize(
        [raw_documents],
        partition_key="src/b1",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert result.get_asset_materialization_events()
    quarantine = list(layout.root.local.rglob("*quarantine*"))
    assert quarantine, "the link's reject is quarantined"
    for path in layout.root.local.rglob("*"):
        if (
            path.is_file()
            and not path.is_symlink()
            and path.suffix in {".parquet", ".jsonl", ".json"}
        ):
            data = path.read_bytes()
            assert b"SECRET-OUTSIDE-THE-ROOT" not in data, path
