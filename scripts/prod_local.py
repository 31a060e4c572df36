"""`make prod-local`: the production topology on one machine, from real servers.

Starts SeaweedFS (an S3 server that enforces credentials, conditional writes
and checksums) on 127.0.0.1, points a Dagster instance configured by
deploy/prod/dagster.yaml at the machine's Postgres, starts a gRPC code server
for the code location, dagster-daemon and dagster-webserver on 127.0.0.1,
lands the sample corpus in the landing zone of an S3 data root
(``s3://llama/data`` on that SeaweedFS; the dedup index in the instance's
Postgres) and lets the daemon's sensors run the graph. It prints where
everything is and, on Ctrl-C, stops every process it started, by PID (each in
its own process group, so run workers go too).

State lives in `.prod_local/` (git-ignored) and the database `llama_prod_local`,
so a second start resumes; `--fresh` starts over. The tests drive the same
`Topology` (tests/deploy/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROD_INSTANCE_CONFIG = ROOT / "deploy" / "prod" / "dagster.yaml"
BIN = Path(sys.executable).parent
LOCATION = "llama_platform"
COMPUTE_LOG_BUCKET = "dagster-compute-logs"
DATA_BUCKET = "llama"
SAMPLE_SOURCE = "python-docs"


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until(check, what: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll `check()` until it is true; fail with the process's log when it died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.3)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


@dataclass
class Processes:
    """The processes we started: each leads its own process group, stopped by its PID."""

    logs: Path
    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started.append((name, proc))
        return proc

    def stop_all(self, grace: float = 15.0) -> None:
        """SIGTERM each group (newest first), then SIGKILL what is left after `grace`."""
        for _, proc in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The group may outlive its leader (run workers): kill what is left of it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.started.clear()


def postgres_admin(host: str, port: int, user: str):
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return conn


def create_database(host: str, port: int, user: str, name: str, fresh: bool = False) -> None:
    conn = postgres_admin(host, port, user)
    try:
        with conn.cursor() as cur:
            if fresh:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def drop_database(host: str, port: int, user: str, name: str) -> None:
    conn = postgres_admin(host, port, user)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@dataclass
class Topology:
    """The production topology on loopback: its settings, processes and addresses."""

    workdir: Path
    database: str
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    gpus: int = 1
    stopped_sensors: tuple[str, ...] = ()
    """Sensors turned off before the daemon starts (tests that drive runs themselves)."""
    s3_endpoint: str = ""
    webserver_url: str = ""
    grpc_port: int = 0
    credentials: dict[str, str] = field(default_factory=dict)
    processes: Processes | None = None

    @property
    def dagster_home(self) -> Path:
        return self.workdir / "dagster_home"

    @property
    def data_root(self) -> str:
        """The data root on the SeaweedFS this topology starts: run workers share
        no disk, as pods would not."""
        return f"s3://{DATA_BUCKET}/data"

    @property
    def layout(self):
        """The data root's layout, reached through the topology's S3 server."""
        from llama_assets.base.layout import DataLayout
        from llama_assets.base.store import open_root

        return DataLayout(open_root(self.data_root, client_factory=self.s3_client))

    def s3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, **self.boto_credentials())

    @property
    def workspace(self) -> Path:
        return self.workdir / "workspace.yaml"

    def env(self) -> dict[str, str]:
        """The environment of every Dagster process: the prod instance's settings."""
        env = dict(os.environ)
        env.update(
            {
                "DAGSTER_HOME": str(self.dagster_home),
                "DAGSTER_PG_HOST": self.pg_host,
                "DAGSTER_PG_PORT": str(self.pg_port),
                "DAGSTER_PG_USER": self.pg_user,
                "DAGSTER_PG_PASSWORD": self.pg_password,
                "DAGSTER_PG_DB": self.database,
                "DAGSTER_COMPUTE_LOG_BUCKET": COMPUTE_LOG_BUCKET,
                "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs",
                "AWS_ACCESS_KEY_ID": self.credentials["access_key"],
                "AWS_SECRET_ACCESS_KEY": self.credentials["secret_key"],
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "LLAMA_DATA_ROOT": self.data_root,
                # Local copies (the chunks table's read replica, fetched checkpoints).
                "LLAMA_CACHE_DIR": str(self.workdir / "cache"),
                # One machine: steps run inside their run's process (llama_assets/executors.py).
                "LLAMA_EXECUTOR": os.environ.get("LLAMA_EXECUTOR", "in_process"),
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p
                ),
            }
        )
        env.update(self.extra_env)
        return env

    def boto_credentials(self) -> dict[str, str]:
        return {
            "aws_access_key_id": self.credentials["access_key"],
            "aws_secret_access_key": self.credentials["secret_key"],
            "region_name": "us-east-1",
        }

    def _load_credentials(self) -> None:
        # Made once per workdir: SeaweedFS keeps its identities with its data.
        path = self.workdir / "s3_credentials.json"
        if not path.exists():
            path.write_text(
                json.dumps(
                    {
                        "access_key": "llama" + secrets.token_hex(4),
                        "secret_key": secrets.token_hex(20),
                    }
                )
            )
            path.chmod(0o600)
        self.credentials = json.loads(path.read_text())

    def start(self, fresh: bool = False) -> Topology:
        if fresh and self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes = Processes(self.workdir / "logs")
        try:
            self._load_credentials()
            self._start_seaweedfs()
            create_database(self.pg_host, self.pg_port, self.pg_user, self.database, fresh=fresh)
            self.dagster_home.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROD_INSTANCE_CONFIG, self.dagster_home / "dagster.yaml")
            self.set_pool_limits(gpus=self.gpus)
            self._start_dagster()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_seaweedfs(self) -> None:
        import boto3

        ports = dict(
            zip(
                ["master", "volume", "filer", "s3", "admin"],
                free_ports(5),
                strict=True,
            )
        )
        # gRPC ports would default to http port + 10000, which may be taken: pick them too.
        grpc = dict(zip(ports, free_ports(5), strict=True))
        data = self.workdir / "seaweedfs"
        data.mkdir(exist_ok=True)
        argv = [
            str(BIN / "weed"),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={COMPUTE_LOG_BUCKET},{DATA_BUCKET}",
        ]
        for name, port in ports.items():
            argv += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc[name]}"]
        env = dict(os.environ)
        env["AWS_ACCESS_KEY_ID"] = self.credentials["access_key"]
        env["AWS_SECRET_ACCESS_KEY"] = self.credentials["secret_key"]
        proc = self.processes.start("seaweedfs", argv, env)
        self.s3_endpoint = f"http://127.0.0.1:{ports['s3']}"
        client = boto3.client("s3", endpoint_url=self.s3_endpoint, **self.boto_credentials())
        wait_until(
            lambda: (
                client.head_bucket(Bucket=COMPUTE_LOG_BUCKET) is not None
                and client.head_bucket(Bucket=DATA_BUCKET) is not None
            ),
            "SeaweedFS",
            60,
            proc,
        )

    def _start_dagster(self) -> None:
        env = self.env()
        self.grpc_port, web_port = free_ports(2)
        # One code server for the daemon, the webserver and the run launcher (the
        # user deployment of the Helm chart), so the code location is imported once.
        code = self.processes.start(
            "code-server",
            [
                str(BIN / "dagster"),
                "api",
                "grpc",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.grpc_port),
                "--module-name",
                "llama_assets.definitions",
                "--working-directory",
                str(ROOT),
                "--location-name",
                LOCATION,
            ],
            env,
        )
        self.workspace.write_text(
            "load_from:\n"
            "  - grpc_server:\n"
            "      host: 127.0.0.1\n"
            f"      port: {self.grpc_port}\n"
            f"      location_name: {LOCATION}\n"
        )
        wait_until(lambda: self._code_server_up(), "the code server", 180, code)
        for sensor in self.stopped_sensors:
            subprocess.run(
                [str(BIN / "dagster"), "sensor", "stop", sensor, "-w", str(self.workspace)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        daemon = self.processes.start(
            "daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)], env
        )
        web = self.processes.start(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(web_port),
                "-w",
                str(self.workspace),
            ],
            env,
        )
        self.webserver_url = f"http://127.0.0.1:{web_port}"
        wait_until(
            lambda: (
                urllib.request.urlopen(self.webserver_url + "/server_info", timeout=2).status == 200
            ),
            "dagster-webserver",
            120,
            web,
        )
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with code {daemon.returncode}")

    def _code_server_up(self) -> bool:
        from dagster._grpc.client import DagsterGrpcClient

        return DagsterGrpcClient(port=self.grpc_port, host="127.0.0.1").ping("up") is not None

    def land_sample_corpus(self) -> list[str]:
        """Land the bundled sample corpus, one batch a part, as `ingest` does; once
        (the sensor may coalesce the parts into one batch folder)."""
        from llama_assets.base.settings import SAMPLE_DATA
        from llama_assets.ingest.landing import add_to_landing

        landing = self.layout.landing
        if (landing / SAMPLE_SOURCE).is_dir():
            return []  # landed by an earlier start
        parts = sorted(p for p in SAMPLE_DATA.iterdir() if p.is_dir())
        return [add_to_landing(part, landing, SAMPLE_SOURCE, part.name) for part in parts]

    @contextlib.contextmanager
    def instance(self):
        """The DagsterInstance of the topology (Postgres, S3 compute logs, queued runs).

        The instance's settings come from the environment, so it is opened under the
        topology's environment, which is then restored: this process stays as it was.
        """
        import dagster as dg

        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.env().items() if k != "PYTHONPATH"})
        try:
            instance = dg.DagsterInstance.from_config(str(self.dagster_home))
            # Built now, under this environment (boto3 reads its credentials here).
            for part in ("run_storage", "event_log_storage", "compute_log_manager"):
                getattr(instance, part)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        with instance:
            yield instance

    def set_pool_limits(self, gpus: int) -> None:
        """Write the pools' limits into the instance before any run claims a slot.

        Also avoids a race of dagster 1.13 on Postgres: two runs that first use a pool at
        the same moment both insert its default limit, and the loser's run fails
        (UniqueViolation, then InFailedSqlTransaction in
        initialize_concurrency_limit_to_default).
        """
        from llama_assets.policies import DEDUP_POOL, GPU_POOL

        with self.instance() as instance:
            instance.event_log_storage.set_concurrency_slots(GPU_POOL, gpus)
            instance.event_log_storage.set_concurrency_slots(DEDUP_POOL, 1)

    def stop(self) -> None:
        if self.processes is not None:
            self.processes.stop_all()

    def describe(self) -> str:
        assert self.processes is not None
        pids = ", ".join(f"{name} {proc.pid}" for name, proc in self.processes.started)
        return "\n".join(
            [
                f"Dagster UI        {self.webserver_url}",
                f"instance          {self.dagster_home}/dagster.yaml "
                f"(deploy/prod/dagster.yaml), Postgres "
                f"{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.database}",
                f"code server       grpc 127.0.0.1:{self.grpc_port} (workspace {self.workspace})",
                f"S3 (SeaweedFS)    {self.s3_endpoint}  buckets {COMPUTE_LOG_BUCKET} "
                f"(compute logs), {DATA_BUCKET}; credentials in {self.workdir}/s3_credentials.json",
                f"data root         {self.data_root} (on SeaweedFS; dedup index in the "
                "instance's Postgres)",
                f"logs              {self.workdir}/logs/",
                f"processes         {pids}",
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".prod_local")
    parser.add_argument("--database", default="llama_prod_local")
    parser.add_argument(
        "--fresh", action="store_true", help="delete the state and database of a previous start"
    )
    args = parser.parse_args(argv)

    topology = Topology(workdir=args.workdir.resolve(), database=args.database)
    print(
        "starting SeaweedFS, the code server, dagster-daemon and dagster-webserver ...", flush=True
    )
    try:
        topology.start(fresh=args.fresh)
    except Exception as exc:  # an expected stop: say what and where to look
        print(f"prod-local could not start: {exc}; see {topology.workdir}/logs/", file=sys.stderr)
        return 1
    # Ctrl-C arrives as KeyboardInterrupt; a SIGTERM (from a supervisor) does the same.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(topology.describe(), flush=True)
        landed = topology.land_sample_corpus()
        if landed:
            print(
                f"landed the sample corpus: {', '.join(landed)} (the landing_zone_sensor runs it)"
            )
        print(
            "the daemon's sensors run the graph; watch it in the UI. Ctrl-C stops everything.",
            flush=True,
        )
        while True:
            for name, proc in topology.processes.started:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping the rest")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        topology.stop()
        print("every process prod-local started is stopped")


if __name__ == "__main__":
    sys.exit(main())
