"""Progress lines of long work: rate and time left, at most one line per interval."""

from llama_assets.base.progress import RateLog


def test_rate_log_says_done_rate_and_time_left_at_most_every_interval():
    now = [0.0]
    lines: list[str] = []
    progress = RateLog(
        "embedded", 1000, lines.append, "chunks", every_seconds=5, clock=lambda: now[0]
    )
    now[0] = 2.0
    progress.update(100)  # too soon: no line
    now[0] = 10.0
    progress.update(500)  # 50 chunks/s, 500 left: 10 s
    now[0] = 11.0
    progress.update(600)  # too soon
    now[0] = 12.5
    progress.update(1000)  # the last one is always said
    assert lines == [
        "embedded 500/1,000 chunks (50.0 chunks/s, 10s left)",
        "embedded 1,000/1,000 chunks (80.0 chunks/s)",
    ]


def test_long_waits_read_in_minutes_and_hours():
    progress = RateLog("read", 10**6, print, "records", clock=lambda: 0.0)
    assert progress.line(1000, 10.0).endswith("(100.0 records/s, 2h46m left)")
    assert progress.line(500_000, 400.0).endswith("6m40s left)")


def test_reading_a_large_batch_reports_each_part(tmp_path):
    from llama_assets.ingest.batch import stream_batch

    batch = tmp_path / "b"
    batch.mkdir()
    lines = "\n".join(f'{{"text": "document number {i} has some words in it"}}' for i in range(25))
    (batch / "docs.jsonl").write_text(lines + "\n")
    seen: list[tuple[int, int]] = []
    stream_batch(batch, "src", "b", lambda frame: None, part_rows=10,
                 on_part=lambda so_far: seen.append((so_far.rows, so_far.parts)))  # fmt: skip
    assert seen == [(10, 1), (20, 2), (25, 3)]
