"""Parts of a table processed in worker processes: same results, same errors."""

from __future__ import annotations

import os

import dagster as dg
import polars as pl
import pytest

from llama_assets.base.parallel import WORKERS_ENV, cpu_workers, map_parts
from llama_assets.base.shards import read_manifest, write_shards
from llama_assets.curate.assets import validated_documents
from llama_assets.curate.clean import fingerprint_part
from llama_assets.tables import CORRUPT_TABLE, Table, map_table


def _square_sum(frame: pl.DataFrame, offset: int) -> int:
    return int((frame["x"] ** 2).sum()) + offset


def _fail_on_three(item: int) -> int:
    if item == 3:
        raise ValueError("item 3 is bad")
    return item


@pytest.fixture
def table(tmp_path):
    out = tmp_path / "staging" / "validated_documents" / "src" / "b1"
    write_shards(pl.DataFrame({"x": list(range(50))}), out, max_rows=10)
    return out


def test_worker_results_equal_in_process_results_in_order(table) -> None:
    inline = list(map_table(table, _square_sum, 7, workers=1))
    spread = list(map_table(table, _square_sum, 7, workers=2))
    assert spread == inline
    assert len(inline) == 5


def test_a_worker_exception_reaches_the_caller() -> None:
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(map_parts(_fail_on_three, range(6), workers=2))


def test_a_corrupt_part_read_in_a_worker_names_its_owner(table) -> None:
    (table / read_manifest(table)["shards"][3]["file"]).write_bytes(b"garbage")
    # The reader names the owner through its definition, as the assets do.
    owned = Table(table, validated_documents.key, "src/b1")
    with pytest.raises(dg.Failure) as failure:
        list(map_table(owned, _square_sum, 0, workers=2))
    assert failure.value.metadata[CORRUPT_TABLE].path == str(table)
    assert failure.value.metadata["owner_asset"].text == "validated_documents"
    assert failure.value.metadata["partition"].text == "src/b1"
    # A bare path names no owner: nothing is guessed from where it lies.
    with pytest.raises(dg.Failure) as failure:
        list(map_table(table, _square_sum, 0, workers=2))
    assert failure.value.metadata["owner_asset"].text == ""


def test_fingerprints_from_workers_equal_in_process_ones(tmp_path) -> None:
    texts = [f"document {i} " + " ".join(f"w{(i * j) % 97}" for j in range(60)) for i in range(40)]
    out = tmp_path / "t"
    write_shards(
        pl.DataFrame({"doc_id": [str(i) for i in range(40)], "text": texts}), out, max_rows=10
    )
    inline = list(map_table(out, fingerprint_part, workers=1))
    spread = list(map_table(out, fingerprint_part, workers=2))
    for a, b in zip(inline, spread, strict=True):
        assert a.hashes == b.hashes
        assert (a.signatures == b.signatures).all()
        assert a.docs.equals(b.docs)


def test_worker_count_from_the_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert cpu_workers() == 3
    monkeypatch.setenv(WORKERS_ENV, "zero")
    with pytest.raises(ValueError, match=WORKERS_ENV):
        cpu_workers()
    monkeypatch.delenv(WORKERS_ENV)
    # Unset, and no container quota: every CPU this process may run on.
    assert cpu_workers(tmp_path / "no-quota") == len(os.sched_getaffinity(0))


def test_worker_count_follows_the_container_cpu_quota(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    cpu_max = tmp_path / "cpu.max"
    machine = cpu_workers(tmp_path / "missing")
    cpu_max.write_text("max 100000\n")
    assert cpu_workers(cpu_max) == machine
    cpu_max.write_text("50000 100000\n")  # half a CPU
    assert cpu_workers(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (machine + 8)} 100000\n")  # more than the machine has
    assert cpu_workers(cpu_max) == machine


def test_torch_threads_leave_out_the_cores_other_processes_keep_busy(tmp_path, monkeypatch):
    from llama_assets.base.parallel import torch_threads

    monkeypatch.delenv("LLAMA_TORCH_THREADS", raising=False)
    monkeypatch.delenv("LLAMA_CPU_WORKERS", raising=False)
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000\n")  # a pod limited to 2 CPUs
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(64)))
    assert torch_threads(quota, loadavg=lambda: (1.0, 1.0, 1.0)) == 2  # only this process
    assert torch_threads(quota, loadavg=lambda: (2.1, 1.0, 1.0)) == 1  # one core busy elsewhere
    assert torch_threads(quota, loadavg=lambda: (9.0, 1.0, 1.0)) == 1  # never below one
    quota.write_text("max 100000\n")
    assert torch_threads(quota, loadavg=lambda: (1.0, 1.0, 1.0)) == 64
    monkeypatch.setenv("LLAMA_TORCH_THREADS", "3")
    assert torch_threads(quota, loadavg=lambda: (9.0, 1.0, 1.0)) == 3
