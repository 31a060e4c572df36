"""Two first commands at once on a fresh DAGSTER_HOME leave one usable instance.

Without the lock, concurrent first opens created the SQLite schema twice (two
alembic heads; 2 of 4 trials, 3 of 6 here) and nothing could open it again.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

OPEN = "from llama_assets.instance import open_instance; open_instance().get_runs(limit=1)"


def _heads(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("select version_num from alembic_version")]


def test_concurrent_first_opens_leave_one_schema(tmp_path):
    for trial in range(3):
        home = tmp_path / f"home{trial}"
        env = {**os.environ, "DAGSTER_HOME": str(home), "LLAMA_DATA_ROOT": str(tmp_path / "d")}
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN], env=env, stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=180)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        for db in (home / "history" / "runs.db", home / "schedules" / "schedules.db"):
            assert len(_heads(db)) == 1, db
        again = subprocess.run([sys.executable, "-c", OPEN], env=env, capture_output=True)
        assert again.returncode == 0, again.stderr.decode()
