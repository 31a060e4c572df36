"""`make prod-local` itself, as a user runs it: it brings the topology up, says where
everything is, lands the sample corpus in the S3 landing zone, and on Ctrl-C stops
every process it started (the other deploy tests drive its `Topology` directly)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.prod_local import ROOT, drop_database

pytestmark = pytest.mark.s3_e2e

READY = "Ctrl-C stops everything."


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; only its parent's wait is missing


def test_make_prod_local_starts_lands_and_stops_everything_on_ctrl_c(tmp_path):
    database = f"llama_test_prod_local_{os.getpid()}_{secrets.token_hex(3)}"
    args = f"--workdir {tmp_path / 'prod'} --database {database} --fresh"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "prod-local", f"ARGS={args}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the terminal's Ctrl-C reaches all of it
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(make.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any(READY in line for line in lines):
            assert make.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "not up after 300 s:\n" + "".join(lines)
            time.sleep(0.5)
        out = "".join(lines)
        ui = re.search(r"Dagster UI\s+(http://127\.0\.0\.1:\d+)", out).group(1)
        assert urllib.request.urlopen(ui + "/server_info", timeout=10).status == 200
        assert re.search(r"S3 \(SeaweedFS\)\s+http://127\.0\.0\.1:\d+", out), out
        assert f"/{database}" in out and "data root         s3://llama/data" in out
        landed = re.search(r"landed the sample corpus: (.+) \(", out).group(1).split(", ")
        assert landed and all(key.startswith("python-docs/") for key in landed), out
        pids = [
            int(p)
            for p in re.findall(r"[\w-]+ (\d+)", out.split("processes", 1)[1].splitlines()[0])
        ]
        assert len(pids) == 4 and all(alive(pid) for pid in pids), out

        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        make.wait(timeout=60)
        reader.join(timeout=10)
        out = "".join(lines)
        assert "every process prod-local started is stopped" in out, out
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pids if alive(pid)], out
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        drop_database("127.0.0.1", 5432, "postgres", database)
