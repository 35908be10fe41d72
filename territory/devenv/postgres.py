"""The embedded PostgreSQL: a private cluster for development and tests, trusting every local
TCP connection (nothing here is for production)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from territory.devenv.base import (
    LOOPBACK,
    STOP_TIMEOUT_S,
    DevEnvError,
    RunAs,
    Server,
    child_env,
    is_root,
    port_open,
    stop_orphan,
    tail,
)
from territory.devenv.packages import PG_MIN_MAJOR, PostgresInstall, find_postgres

PG_USER = "territory"
PG_DATABASE = "territory"
TIMESCALEDB_ENV = "TERRITORY_EMBEDDED_TIMESCALEDB"


class PostgresServer(Server):
    """A private PostgreSQL cluster in `<data_dir>/pg`, listening on 127.0.0.1:`port`.

    User `territory` is the superuser and is trusted without a password on TCP from loopback.
    The port is chosen at the first start when not given and kept for later starts.
    """

    NAME = "PostgreSQL"
    WHAT = "PostgreSQL cluster"
    PRIVATE_DIR = "pg"
    LOCK_FILE = ".postgres.lock"
    # Fast shutdown: what `pg_ctl stop -m fast` sends the postmaster.
    STOP_SIGNAL = signal.SIGINT

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self._install: PostgresInstall | None = None
        self._timescaledb = False

    # -- properties

    @property
    def url(self) -> str:
        if self.port is None:
            raise DevEnvError("PostgreSQL has not been started: no port yet")
        return f"postgresql://{PG_USER}@{LOOPBACK}:{self.port}/{PG_DATABASE}"

    @property
    def timescaledb(self) -> bool:
        """Whether the running server preloads TimescaleDB (CREATE EXTENSION then works)."""
        return self._timescaledb

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pgdata(self) -> Path:
        """The cluster directory (under /var/tmp when root; `<data_dir>/pg` links to it)."""
        return self._private()

    # -- life cycle

    def _start(self, timeout: float) -> None:
        pgdata = self.pgdata
        existing = self._cluster_major(pgdata)
        install = find_postgres(existing)
        if install is None:
            if existing is not None:
                raise DevEnvError(
                    f"the cluster in {pgdata} was made by PostgreSQL {existing}, which is not "
                    f"installed; install postgresql-{existing} or remove {pgdata}"
                )
            raise DevEnvError(
                f"no PostgreSQL >= {PG_MIN_MAJOR} server found (initdb, pg_ctl, postgres on "
                "PATH or in /usr/lib/postgresql/*/bin): "
                + ("sudo " if not is_root() else "")
                + "apt-get install postgresql"
            )
        self._install = install
        run_as = self._run_as_for(pgdata)
        self._stop_orphan(pgdata)
        if existing is None:
            self._initdb(install, pgdata, run_as)
        self._timescaledb = self._want_timescaledb(install)
        self._launch(
            spawn=lambda: self._spawn(install, pgdata, run_as),
            wait_ready=lambda: self._wait_ready(install, timeout),
            in_use=lambda: "already in use" in tail([self.log_path], 15),
        )
        self._ensure_database()

    # -- queries

    def psql(self, sql: str, database: str = PG_DATABASE, timeout: float = 30.0) -> str:
        """Run SQL with psql over TCP as the superuser; returns unaligned, tuples-only output."""
        if self.port is None:
            raise DevEnvError("PostgreSQL has not been started")
        install = self._install or find_postgres()
        psql = install.tool("psql") if install else Path(shutil.which("psql") or "psql")
        cmd = [
            str(psql),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "-d",
            database,
            "-c",
            sql,
        ]
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=child_env({"PGCONNECT_TIMEOUT": "5"}),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevEnvError(f"psql timed out after {timeout} s running {sql!r}") from exc
        if result.returncode != 0:
            raise DevEnvError(f"psql failed running {sql!r}: {result.stderr.strip()}")
        return result.stdout

    # -- internals

    @staticmethod
    def _run_as_for(pgdata: Path) -> RunAs | None:
        if not is_root():
            return None
        if pgdata.is_dir():
            owner = pgdata.stat().st_uid
            if owner != 0:  # an existing cluster runs as whoever made it
                return RunAs.of_uid(owner)
        return RunAs.first_of("postgres", "nobody")

    @staticmethod
    def _cluster_major(pgdata: Path) -> int | None:
        try:
            return int((pgdata / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    def _stop_orphan(self, pgdata: Path) -> None:
        pid = self._orphan_pid(pgdata / "postmaster.pid", "postgres")
        if pid is not None:
            self._note(f"stopping PostgreSQL left running as pid {pid}")
            stop_orphan(pid, self.STOP_SIGNAL, "PostgreSQL server", STOP_TIMEOUT_S)

    def _initdb(self, install: PostgresInstall, pgdata: Path, run_as: RunAs | None) -> None:
        # initdb into a scratch dir and rename, so an interrupted initdb leaves nothing behind.
        scratch = pgdata.with_name(pgdata.name + ".initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        if pgdata.exists():
            if any(pgdata.iterdir()):
                raise DevEnvError(f"{pgdata} is not empty and holds no cluster; remove it")
            pgdata.rmdir()
        scratch.mkdir(mode=0o700, parents=True)
        if run_as is not None:
            run_as.chown(scratch)
        self._note(f"initdb {pgdata}")
        cmd = [
            str(install.tool("initdb")),
            "-D",
            str(scratch),
            f"--username={PG_USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
        result = subprocess.run(
            cmd,
            stdout=self._open_log(),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=scratch,
            env=child_env(run_as.env() if run_as else None),
            timeout=300,
            # extra_groups=[] drops root's supplementary groups too (gid 0 among them).
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise DevEnvError(f"initdb failed:\n{tail([self.log_path])}")
        scratch.rename(pgdata)

    def _want_timescaledb(self, install: PostgresInstall) -> bool:
        if os.environ.get(TIMESCALEDB_ENV, "").strip().lower() in ("off", "0", "false", "no"):
            return False
        return install.has_extension("timescaledb")

    def _socket_dir(self, pgdata: Path) -> str:
        # A unix socket path must fit in 107 bytes; a deep tmp dir may not. We only use TCP,
        # so then there is simply no socket.
        assert self.port is not None
        return str(pgdata) if len(f"{pgdata}/.s.PGSQL.{self.port}.lock") < 100 else ""

    def _spawn(self, install: PostgresInstall, pgdata: Path, run_as: RunAs | None) -> None:
        assert self.port is not None
        cmd = [
            str(install.tool("postgres")),
            "-D",
            str(pgdata),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={self._socket_dir(pgdata)}",
            "-c",
            "fsync=on",
            "-c",
            "log_line_prefix=%m [%p] ",
        ]
        if self._timescaledb:
            cmd += ["-c", "shared_preload_libraries=timescaledb"]
            cmd += ["-c", "timescaledb.telemetry_level=off"]
        self._note(f"start PostgreSQL {install.major} on port {self.port}: {' '.join(cmd)}")
        self._proc = subprocess.Popen(
            cmd,
            stdout=self._open_log(),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=pgdata,
            env=child_env(run_as.env() if run_as else None),
            # Its own session: a Ctrl-C in the terminal reaches the app, which then stops us.
            start_new_session=True,
            # extra_groups=[] drops root's supplementary groups too (gid 0 among them).
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )

    def _wait_ready(self, install: PostgresInstall, timeout: float) -> None:
        assert self._proc is not None and self.port is not None
        pg_isready: Path | None
        try:
            pg_isready = install.tool("pg_isready")
        except DevEnvError:
            pg_isready = None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise DevEnvError(
                    f"PostgreSQL exited with code {self._proc.returncode} while starting on "
                    f"port {self.port}:\n{tail([self.log_path])}"
                )
            if pg_isready is not None:
                probe = [str(pg_isready), "-q", "-h", LOOPBACK, "-p", str(self.port)]
                probe += ["-U", PG_USER, "-d", "postgres", "-t", "2"]
                ready = (
                    subprocess.run(
                        probe,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env=child_env(),
                    ).returncode
                    == 0
                )
            else:
                ready = port_open(self.port) and self._probe_sql()
            if ready:
                return
            if time.monotonic() > deadline:
                raise DevEnvError(
                    f"PostgreSQL did not accept connections on port {self.port} within "
                    f"{timeout:.0f} s:\n{tail([self.log_path])}"
                )
            time.sleep(0.1)

    def _probe_sql(self) -> bool:
        try:
            self.psql("SELECT 1", database="postgres", timeout=5)
        except DevEnvError:
            return False
        return True

    def _ensure_database(self) -> None:
        exists = self.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'", database="postgres"
        )
        if exists.strip() != "1":
            self.psql(f"CREATE DATABASE {PG_DATABASE}", database="postgres")
