"""A private PostgreSQL and a private Mosquitto for development and tests.

`embedded_services(data_dir)` starts both on free loopback ports, with their data under
`data_dir`, and stops them on exit:

    with embedded_services(Path(".territory")) as services:
        print(services.database_url, services.mqtt_url)

Nothing here is for production: PostgreSQL trusts every local TCP connection. Mosquitto
refuses anonymous clients and checks its ACL, as in production (docs/broker-auth.md): the
platform's own accounts (`@territory-ingest`, `@territory-worker`, `@territory-simulator`, and
`@territory-dev` for scripts and tests, which may read and write everything) get generated
passwords, kept in `<data_dir>/broker-accounts.json`; `Services.mqtt_url` carries the dev
account, `Services.account_url(name)` another one. The worker renders the password and ACL files
into Mosquitto's directory (`Services.env()` says where, and which pid to send SIGHUP to).
`TERRITORY_EMBEDDED_BROKER_AUTH=off` starts it open to anonymous clients instead. Both listen on
127.0.0.1 only.

Running as root. PostgreSQL refuses to run as root, and Mosquitto should not, so as root both
run as an unprivileged user. Their files must be reachable by that user, and the data dir may
sit under /root (mode 700), so as root the files live in
`/var/tmp/territory-<hash of data_dir>/{pg,mosquitto}`, owned by that user, and
`<data_dir>/pg` and `<data_dir>/mosquitto` are symlinks to them. Such a directory whose data dir
has gone (a deleted pytest tmp dir, say) is removed the next time one is made.

`python -m territory.devenv ensure-packages [--install]` checks (and installs) the Debian
packages; `python -m territory.devenv up [--data-dir DIR]` runs both servers until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

PG_MIN_MAJOR = 15
PG_USER = "territory"
PG_DATABASE = "territory"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RUNTIME_ROOT = Path("/var/tmp")
TIMESCALEDB_ENV = "TERRITORY_EMBEDDED_TIMESCALEDB"
BROKER_AUTH_ENV = "TERRITORY_EMBEDDED_BROKER_AUTH"
# The marker `_no_service_starts` writes, so that it only ever removes its own policy file.
_POLICY_MARKER = "# territory.devenv: keep apt-get from starting services"
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


class DevEnvError(RuntimeError):
    """The development environment cannot be set up or a server did not start or stop."""


# --------------------------------------------------------------------------------------------
# Small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_root() -> bool:
    return os.geteuid() == 0


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(paths: Sequence[Path], lines: int = 30) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        parts.append(f"--- last lines of {path} ---\n{tail}")
    return "\n".join(parts) if parts else "(no log written)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie still answers kill(0) but is gone for our purposes.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _stop_orphan(pid: int, sig: signal.Signals, what: str, timeout: float) -> None:
    """Stop a server left running by a process that died without stopping it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            break
        time.sleep(0.1)
    if _pid_alive(pid):
        raise DevEnvError(f"could not stop the {what} left running as pid {pid}")


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for server processes: the caller's, less libpq's PG* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def _terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send `sig`, wait up to `timeout`, then SIGKILL: the process is reaped either way."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged user a server runs as when we are root."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def first_of(cls, *names: str) -> _RunAs:
        for name in names:
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)
        raise DevEnvError(f"none of the users {', '.join(names)} exists to run a server as")

    @classmethod
    def of_uid(cls, uid: int) -> _RunAs:
        pw = pwd.getpwuid(uid)
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def chown(self, path: Path) -> None:
        os.lchown(path, self.uid, self.gid)


class _Lock:
    """An exclusive flock on a file: one process at a time runs a server on a data dir.

    The kernel drops it when its process dies, which is how a server left running by a dead
    process (an orphan) is told from one that another live process is using.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(self.path.read_text().strip())})"
            raise DevEnvError(
                f"the {what} in {self.path.parent} is in use by another process{holder}; "
                "stop it or use another data dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------------------------
# Where files live


def _runtime_base(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return RUNTIME_ROOT / f"territory-{digest}"


def _check_safe_dir(path: Path) -> None:
    """/var/tmp is world-writable: refuse a directory someone else planted there."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise DevEnvError(
            f"{path} is not a directory owned by root and writable only by it; remove it"
        )


def _server_running_in(directory: Path) -> bool:
    """Whether the pid file of a server that keeps its files in `directory` names a live pid."""
    for pid_file in ("postmaster.pid", "server.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if _pid_alive(int((directory / pid_file).read_text().split()[0])):
                return True
    return False


def _collect_orphaned_runtime_dirs() -> None:
    """Remove /var/tmp/territory-* directories whose data dir is gone and nothing runs in."""
    for base in RUNTIME_ROOT.glob("territory-*"):
        if not re.fullmatch(r"territory-[0-9a-f]{12}", base.name):
            continue
        try:
            _check_safe_dir(base)
            origin = (base / "origin").read_text().strip()
        except (OSError, DevEnvError):
            continue
        if not origin or os.path.lexists(origin):
            continue
        if not any(_server_running_in(d) for d in (base / "pg", base / "mosquitto")):
            shutil.rmtree(base, ignore_errors=True)


def _private_dir(data_dir: Path, name: str, as_root: bool) -> Path:
    """The real directory for `<data_dir>/<name>`, where a server's unprivileged user can reach it.

    Not root: `<data_dir>/<name>` itself. Root: `/var/tmp/territory-<hash>/<name>`, with
    `<data_dir>/<name>` a symlink to it. The directory is not created here.
    """
    link = data_dir / name
    if not as_root:
        return link
    if link.exists() and not link.is_symlink():
        raise DevEnvError(
            f"{link} is a real directory, made when not running as root; as root the "
            f"servers keep their files under {RUNTIME_ROOT}. Run as its owner, or remove it"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    base = _runtime_base(data_dir)
    if not base.exists():
        _collect_orphaned_runtime_dirs()
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o755)
    _check_safe_dir(base)
    os.chmod(base, 0o755)  # the server users traverse it
    (base / "origin").write_text(f"{data_dir}\n")
    target = base / name
    if not link.is_symlink() and os.path.lexists(target):
        # The symlink is what ties these files to the data dir: without it, the data dir was
        # deleted or reset (rm -rf .territory) and the user expects to start afresh.
        if _server_running_in(target):
            raise DevEnvError(f"{target} is in use by a running server; stop it first")
        shutil.rmtree(target)
    if not link.is_symlink() or os.readlink(link) != str(target):
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return target


def _remove_private_dir(data_dir: Path, name: str, real: Path) -> None:
    shutil.rmtree(real, ignore_errors=True)
    link = data_dir / name
    if link.is_symlink():
        link.unlink()
        base = real.parent
        leftovers = {p.name for p in base.iterdir()} if base.is_dir() else set()
        if leftovers <= {"origin"}:
            shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Finding and installing binaries


@dataclass(frozen=True)
class PostgresInstall:
    """One installed PostgreSQL server version: its bin dir holds initdb, pg_ctl, postgres."""

    bin_dir: Path
    major: int

    def tool(self, name: str) -> Path:
        """A program of this install, else the one on PATH (psql and pg_isready are clients)."""
        own = self.bin_dir / name
        if own.exists():
            return own
        found = shutil.which(name)
        if found is None:
            raise DevEnvError(f"{name} not found in {self.bin_dir} nor on PATH")
        return Path(found)

    def sharedir(self) -> Path | None:
        pg_config = self.bin_dir / "pg_config"
        if pg_config.exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [str(pg_config), "--sharedir"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                ).stdout.strip()
                if out:
                    return Path(out)
        for candidate in (
            Path(f"/usr/share/postgresql/{self.major}"),
            self.bin_dir.parent / "share" / "postgresql",
            self.bin_dir.parent / "share",
        ):
            if (candidate / "extension").is_dir():
                return candidate
        return None

    def has_extension(self, name: str) -> bool:
        share = self.sharedir()
        return share is not None and (share / "extension" / f"{name}.control").exists()


def _postgres_major(postgres: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _postgres_candidates() -> list[PostgresInstall]:
    """Every install with initdb, pg_ctl and postgres side by side: PATH first."""
    found: list[PostgresInstall] = []
    seen: set[Path] = set()
    dirs: list[Path] = []
    on_path = shutil.which("postgres")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)

    def version_key(p: Path) -> int:
        return int(p.parent.name) if p.parent.name.isdigit() else -1

    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    for bin_dir in dirs:
        if bin_dir in seen or not all((bin_dir / t).exists() for t in ("initdb", "pg_ctl")):
            continue
        seen.add(bin_dir)
        postgres = bin_dir / "postgres"
        major = _postgres_major(postgres) if postgres.exists() else None
        if major is not None:
            found.append(PostgresInstall(bin_dir, major))
    return found


def find_postgres(major: int | None = None) -> PostgresInstall | None:
    """The highest installed PostgreSQL >= 15 (or exactly `major`), preferring PATH on ties."""
    candidates = [
        c
        for c in _postgres_candidates()
        if (c.major == major if major is not None else c.major >= PG_MIN_MAJOR)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c.major)  # max() keeps the first (PATH) on ties


def find_mosquitto() -> Path | None:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto")):
        if candidate.exists():
            return candidate
    return None


def find_chromium() -> Path | None:
    """Debian's Chromium, which the browser tests drive headless (no browser download)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def missing_packages(browser: bool = False) -> list[str]:
    """The Debian packages still needed: a PostgreSQL >= 15 server, mosquitto and its clients,
    and with `browser` Chromium for the page tests."""
    missing = []
    if browser and find_chromium() is None:
        missing.append("chromium")
    if find_postgres() is None:
        missing.append("postgresql")
    if find_mosquitto() is None:
        missing.append("mosquitto")
    if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None:
        missing.append("mosquitto-clients")
    return missing


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep the packages' maintainer scripts from starting their system services.

    Debian's postgresql and mosquitto packages start a service (a cluster on 5432, a broker on
    1883) through invoke-rc.d. We never use those: our servers run on free ports. Starting
    them can fail in containers, which fails the whole apt-get run, or leave a broker running
    that nobody asked for. invoke-rc.d asks /usr/sbin/policy-rc.d first, and exit code 101
    means "not allowed", so we put one there for the duration of the install, unless the
    machine already has its own (Docker images do), which we leave alone.
    """
    policy = _POLICY_RC_D
    if policy.exists() or policy.is_symlink():
        yield
        return
    policy.write_text(f"#!/bin/sh\n{_POLICY_MARKER}\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if _POLICY_MARKER in policy.read_text():
                policy.unlink()


def _apt_get(args: list[str], log: IO[bytes] | None) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", NEEDRESTART_MODE="a")
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    if log is not None:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
    result = subprocess.run(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )
    if result.returncode != 0:
        where = f" (see {log.name})" if log is not None else ""
        raise DevEnvError(f"`{' '.join(cmd)}` failed with exit code {result.returncode}{where}")


def ensure_packages(install: bool, log: Path | None = None, browser: bool = False) -> None:
    """Make sure PostgreSQL >= 15, mosquitto and mosquitto-clients are installed.

    With `install` and as root, missing ones are installed with apt-get (output to `log`, or
    to our stdout when None); otherwise a missing one is a DevEnvError naming the command.
    """
    missing = missing_packages(browser)
    if not missing:
        return
    command = f"apt-get install {' '.join(missing)}"
    if not _is_root():
        note = f" (PostgreSQL {PG_MIN_MAJOR} or newer)" if "postgresql" in missing else ""
        raise DevEnvError(f"missing {', '.join(missing)}{note}: install with `sudo {command}`")
    if not install:
        raise DevEnvError(f"missing {', '.join(missing)}: install with `{command}`")
    if shutil.which("apt-get") is None:
        raise DevEnvError(
            f"missing {', '.join(missing)} and apt-get is not available: install a PostgreSQL "
            f">= {PG_MIN_MAJOR} server, mosquitto and the mosquitto clients by hand"
        )
    with contextlib.ExitStack() as stack:
        log_file = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log_file = stack.enter_context(log.open("ab"))
        stack.enter_context(_no_service_starts())
        _apt_get(["update"], log_file)
        _apt_get(["install", "-y", "--no-install-recommends", *missing], log_file)
    still = missing_packages(browser)
    if still:
        versions = [c.major for c in _postgres_candidates()]
        raise DevEnvError(
            f"still missing after apt-get install: {', '.join(still)}"
            + (
                f" (PostgreSQL {PG_MIN_MAJOR}+ is needed; installed: {versions})"
                if "postgresql" in still
                else ""
            )
        )


# --------------------------------------------------------------------------------------------
# PostgreSQL


class PostgresServer:
    """A private PostgreSQL cluster in `<data_dir>/pg`, listening on 127.0.0.1:`port`.

    User `territory` is the superuser and is trusted without a password on TCP from loopback.
    The port is chosen at the first start when not given and kept for later starts.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._port_fixed = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = _Lock(self.data_dir / ".postgres.lock")
        self._install: PostgresInstall | None = None
        self._timescaledb = False
        self._pgdata: Path | None = None

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
        if self._pgdata is None:
            self._pgdata = _private_dir(self.data_dir, "pg", _is_root())
        return self._pgdata

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    # -- life cycle

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire("PostgreSQL cluster")
        try:
            self._start(timeout)
        except BaseException:
            self._kill()
            self._close()
            raise

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
                + ("sudo " if not _is_root() else "")
                + "apt-get install postgresql"
            )
        self._install = install
        run_as = self._run_as_for(pgdata)
        self._stop_orphan(pgdata)
        if existing is None:
            self._initdb(install, pgdata, run_as)
        self._timescaledb = self._want_timescaledb(install)

        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            if self.port is None or (attempt > 0 and not self._port_fixed):
                self.port = free_port()
            self._spawn(install, pgdata, run_as)
            try:
                self._wait_ready(install, timeout)
                break
            except DevEnvError:
                in_use = "already in use" in _tail([self.log_path], 15)
                self._kill()
                if not in_use or attempt == attempts - 1:
                    raise
        self._port_fixed = True
        self._ensure_database()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Fast shutdown: what `pg_ctl stop -m fast` does (SIGINT to the postmaster)."""
        try:
            if self._proc is not None:
                _terminate(self._proc, signal.SIGINT, timeout)
        finally:
            self._close()

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        self.stop()
        self.start(timeout)

    def remove_data(self) -> None:
        """Delete the cluster (the server must be stopped)."""
        if self.running:
            raise DevEnvError("stop PostgreSQL before removing its data")
        _remove_private_dir(self.data_dir, "pg", self.pgdata)
        self._pgdata = None

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
                env=_child_env({"PGCONNECT_TIMEOUT": "5"}),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevEnvError(f"psql timed out after {timeout} s running {sql!r}") from exc
        if result.returncode != 0:
            raise DevEnvError(f"psql failed running {sql!r}: {result.stderr.strip()}")
        return result.stdout

    # -- internals

    @staticmethod
    def _run_as_for(pgdata: Path) -> _RunAs | None:
        if not _is_root():
            return None
        if pgdata.is_dir():
            owner = pgdata.stat().st_uid
            if owner != 0:  # an existing cluster runs as whoever made it
                return _RunAs.of_uid(owner)
        return _RunAs.first_of("postgres", "nobody")

    @staticmethod
    def _cluster_major(pgdata: Path) -> int | None:
        try:
            return int((pgdata / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    def _open_log(self) -> IO[bytes]:
        if self._log is None or self._log.closed:
            self._log = self.log_path.open("ab")
        return self._log

    def _note(self, text: str) -> None:
        log = self._open_log()
        log.write(f"=== territory.devenv {time.strftime('%Y-%m-%d %H:%M:%S')}: {text}\n".encode())
        log.flush()

    def _stop_orphan(self, pgdata: Path) -> None:
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if _pid_alive(pid) and "postgres" in _cmdline(pid):
            # We hold the lock, so whoever started it has died: it is ours to stop.
            self._note(f"stopping PostgreSQL left running as pid {pid}")
            _stop_orphan(pid, signal.SIGINT, "PostgreSQL server", STOP_TIMEOUT_S)

    def _initdb(self, install: PostgresInstall, pgdata: Path, run_as: _RunAs | None) -> None:
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
            env=_child_env(run_as.env() if run_as else None),
            timeout=300,
            # extra_groups=[] drops root's supplementary groups too (gid 0 among them).
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise DevEnvError(f"initdb failed:\n{_tail([self.log_path])}")
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

    def _spawn(self, install: PostgresInstall, pgdata: Path, run_as: _RunAs | None) -> None:
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
            env=_child_env(run_as.env() if run_as else None),
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
                    f"port {self.port}:\n{_tail([self.log_path])}"
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
                        env=_child_env(),
                    ).returncode
                    == 0
                )
            else:
                ready = _port_open(self.port) and self._probe_sql()
            if ready:
                return
            if time.monotonic() > deadline:
                raise DevEnvError(
                    f"PostgreSQL did not accept connections on port {self.port} within "
                    f"{timeout:.0f} s:\n{_tail([self.log_path])}"
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

    def _kill(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, signal.SIGINT, 10)
            self._proc = None

    def _close(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            if self._log is not None:
                self._log.close()
                self._log = None
            self._lock.release()


# --------------------------------------------------------------------------------------------
# Mosquitto


class MosquittoServer:
    """A private Mosquitto broker with persistence in `<data_dir>/mosquitto`, on 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int | None = None, auth: bool | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._port_fixed = port is not None
        # Password and ACL enforced unless switched off (TERRITORY_EMBEDDED_BROKER_AUTH=off).
        self.auth = os.environ.get(BROKER_AUTH_ENV, "on") != "off" if auth is None else auth
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = _Lock(self.data_dir / ".mosquitto.lock")
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise DevEnvError("Mosquitto has not been started: no port yet")
        return f"mqtt://{LOOPBACK}:{self.port}"

    @property
    def accounts_path(self) -> Path:
        """The platform accounts' passwords, in clear: the caller's, not the broker's, file."""
        return self.data_dir / "broker-accounts.json"

    def account_password(self, username: str) -> str:
        passwords: dict[str, str] = json.loads(self.accounts_path.read_text())
        return passwords[username]

    def account_url(self, username: str) -> str:
        """The broker's URL with a platform account's credentials (the plain URL when the
        broker is open to anonymous clients)."""
        if not self.auth:
            return self.url
        password = quote(self.account_password(username), safe="")
        return f"mqtt://{quote(username, safe='@')}:{password}@{LOOPBACK}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self._pid_file()

    @property
    def dir(self) -> Path:
        """Config, persistence and logs (under /var/tmp when root; `<data_dir>/mosquitto`
        links to it)."""
        if self._dir is None:
            self._dir = _private_dir(self.data_dir, "mosquitto", _is_root())
        return self._dir

    @property
    def conf_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def console_log_path(self) -> Path:
        """Mosquitto's own stdout/stderr: errors from before its log file is open."""
        return self.data_dir / "mosquitto.console.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.running:
            return
        binary = find_mosquitto()
        if binary is None:
            raise DevEnvError(
                "mosquitto not found (PATH, /usr/sbin): "
                + ("sudo " if not _is_root() else "")
                + "apt-get install mosquitto mosquitto-clients"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire("Mosquitto broker")
        try:
            self._start(binary, timeout)
        except BaseException:
            self._kill()
            self._close()
            raise

    def _start(self, binary: Path, timeout: float) -> None:
        run_as = self._run_as()
        directory = self.dir
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.auth:
            self._write_auth_files()
        if run_as is not None:
            # Mosquitto drops to run_as after reading its config and binding its port, and
            # then writes its log and its persistence file here.
            for path in (directory, *directory.iterdir()):
                run_as.chown(path)
        self._stop_orphan()
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            if self.port is None or (attempt > 0 and not self._port_fixed):
                self.port = free_port()
            self._write_conf(run_as)
            self._spawn(binary)
            try:
                self._wait_ready(timeout)
                break
            except DevEnvError:
                in_use = "in use" in _tail([self.console_log_path, self.log_path], 10)
                self._kill()
                if not in_use or attempt == attempts - 1:
                    raise
        self._port_fixed = True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file on the way out."""
        try:
            if self._proc is not None:
                _terminate(self._proc, signal.SIGTERM, timeout)
        finally:
            self._close()

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        self.stop()
        self.start(timeout)

    def remove_data(self) -> None:
        if self.running:
            raise DevEnvError("stop Mosquitto before removing its data")
        _remove_private_dir(self.data_dir, "mosquitto", self.dir)
        self._dir = None

    # -- internals

    @staticmethod
    def _run_as() -> _RunAs | None:
        # As root, run as `mosquitto` (what the Debian package runs its broker as) or nobody,
        # rather than `user root`: a network listener has no business being root, even on
        # loopback, and PostgreSQL already needs the same /var/tmp arrangement anyway.
        return _RunAs.first_of("mosquitto", "nobody") if _is_root() else None

    def _write_auth_files(self) -> None:
        """The platform's accounts before the worker has ever run: their passwords (made once,
        kept in the data dir), `services.passwd` (their hashes, which the worker's render
        always includes), and a first password file and ACL if none was rendered yet."""
        from broker.files import ACL_FILE, PASSWORD_FILE, SERVICES_FILE, write_atomic
        from broker.passwords import generate_password, password_hash, verify
        from broker.render import (
            SERVICE_ACCOUNTS,
            Account,
            parse_password_file,
            render_acl,
            render_passwords,
        )
        from territory.config import load_settings
        from worker.broker_auth import topics_of

        passwords: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            passwords = json.loads(self.accounts_path.read_text())
        if set(SERVICE_ACCOUNTS) - set(passwords):
            for name in SERVICE_ACCOUNTS:
                passwords.setdefault(name, generate_password())
            fd = os.open(self.accounts_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(passwords, f, indent=1)
        services_path = self.dir / SERVICES_FILE
        current: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            current = {
                a.username: a.password_hash for a in parse_password_file(services_path.read_text())
            }
        services = [
            Account(
                name,
                current[name]
                if name in current and verify(passwords[name], current[name])
                else password_hash(passwords[name]),
                "service",
            )
            for name in SERVICE_ACCOUNTS
        ]
        passwd_path = self.dir / PASSWORD_FILE
        if any(current.get(a.username) != a.password_hash for a in services):
            write_atomic(services_path, render_passwords(services))
            if passwd_path.exists():
                # A password file the worker rendered before: keep its devices and gateways,
                # with the services' new hashes, until the worker renders it again.
                kept = [
                    line
                    for line in passwd_path.read_text().splitlines()
                    if line
                    and not line.startswith("#")
                    and line.partition(":")[0] not in SERVICE_ACCOUNTS
                ]
                write_atomic(
                    passwd_path,
                    render_passwords(services).rstrip("\n")
                    + "\n"
                    + "".join(f"{x}\n" for x in kept),
                )
        if not passwd_path.exists() or not (self.dir / ACL_FILE).exists():
            write_atomic(self.dir / ACL_FILE, render_acl(services, topics_of(load_settings())))
            write_atomic(passwd_path, render_passwords(services))

    def _write_conf(self, run_as: _RunAs | None) -> None:
        d = self.dir
        if self.auth:
            access = [
                "# Accounts and rights: rendered from the registry by the territory worker,",
                "# reloaded on SIGHUP (docs/broker-auth.md).",
                "allow_anonymous false",
                f"password_file {d}/passwd",
                f"acl_file {d}/acl",
            ]
        else:
            access = [
                f"# Development only ({BROKER_AUTH_ENV}=off): anyone on this machine may",
                "# connect, without a password.",
                "allow_anonymous true",
            ]
        lines = [
            "# Written by territory.devenv at every start; edits are lost.",
            f"listener {self.port} {LOOPBACK}",
            *access,
            "persistence true",
            f"persistence_location {d}/",
            "autosave_interval 1",
            "# For MQTT 3.1.1 clients; MQTT 5 clients set their own Receive Maximum.",
            "max_inflight_messages 1000",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "set_tcp_nodelay true",
            f"log_dest file {d}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if run_as is not None:
            lines += [
                "# Started as root: drop to this user, who owns this directory.",
                f"user {run_as.name}",
            ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _pid_file(self) -> Path:
        return self.dir / "server.pid"

    def _stop_orphan(self) -> None:
        try:
            pid = int(self._pid_file().read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if _pid_alive(pid) and str(self.conf_path) in _cmdline(pid):
            # We hold the lock, so whoever started it has died: it is ours to stop.
            _stop_orphan(pid, signal.SIGTERM, "Mosquitto broker", STOP_TIMEOUT_S)

    def _spawn(self, binary: Path) -> None:
        if self._log is None or self._log.closed:
            self._log = self.console_log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"=== territory.devenv {stamp}: start on port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            [str(binary), "-c", str(self.conf_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            env=_child_env(),
            start_new_session=True,  # Ctrl-C in a terminal reaches the app, not the broker
        )
        self._pid_file().write_text(f"{self._proc.pid}\n")

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise DevEnvError(
                    f"Mosquitto exited with code {self._proc.returncode} while starting on "
                    f"port {self.port}:\n{_tail([self.console_log_path, self.log_path])}"
                )
            if _port_open(self.port):
                return
            if time.monotonic() > deadline:
                raise DevEnvError(
                    f"Mosquitto did not accept connections on port {self.port} within "
                    f"{timeout:.0f} s:\n{_tail([self.console_log_path, self.log_path])}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, signal.SIGTERM, 10)
            self._proc = None

    def _close(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            with contextlib.suppress(OSError):
                if self._dir is not None:
                    self._pid_file().unlink(missing_ok=True)
            if self._log is not None:
                self._log.close()
                self._log = None
            self._lock.release()


# --------------------------------------------------------------------------------------------
# Both


@dataclass
class Services:
    postgres: PostgresServer
    mosquitto: MosquittoServer

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def mqtt_url(self) -> str:
        """With the development account's credentials, which may read and write everything."""
        from broker.render import DEV

        return self.mosquitto.account_url(DEV)

    def account_url(self, username: str) -> str:
        return self.mosquitto.account_url(username)

    @property
    def timescaledb(self) -> bool:
        return self.postgres.timescaledb

    def env(self) -> dict[str, str]:
        """TERRITORY_* variables pointing a `territory` process at these servers."""
        env = {"TERRITORY_DATABASE_URL": self.database_url, "TERRITORY_MQTT_URL": self.mqtt_url}
        if self.mosquitto.auth:
            env["TERRITORY_BROKER_AUTH_DIR"] = str(self.mosquitto.dir)
            env["TERRITORY_BROKER_PID_FILE"] = str(self.mosquitto.pid_file)
        return env


@contextlib.contextmanager
def embedded_services(
    data_dir: Path,
    install: bool = False,
    *,
    keep_data: bool = True,
    mqtt_port: int | None = None,
    broker_auth: bool | None = None,
) -> Iterator[Services]:
    """Start PostgreSQL, then Mosquitto, with their data under `data_dir`; stop both on exit.

    `install`: apt-get install missing packages (as root). `keep_data=False` deletes both
    servers' data on exit (for throwaway test data dirs).
    """
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_packages(install, log=data_dir / "apt.log")
    services = Services(
        PostgresServer(data_dir), MosquittoServer(data_dir, mqtt_port, auth=broker_auth)
    )
    try:
        services.postgres.start()
        services.mosquitto.start()
        yield services
    finally:
        failure: BaseException | None = None
        for server in (services.mosquitto, services.postgres):
            try:
                server.stop()
                if not keep_data:
                    server.remove_data()
            except BaseException as exc:  # stop the other one even on Ctrl-C
                failure = failure or exc
        if failure is not None and sys.exc_info()[1] is None:
            raise failure


# --------------------------------------------------------------------------------------------
# Command line: python -m territory.devenv ...


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m territory.devenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("ensure-packages", help="check (and install) the Debian packages")
    check.add_argument("--install", action="store_true", help="apt-get install what is missing")
    check.add_argument("--browser", action="store_true", help="Chromium too (page tests)")
    up = sub.add_parser("up", help="run PostgreSQL and Mosquitto until Ctrl-C")
    up.add_argument("--data-dir", type=Path, default=Path(".territory"))
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure-packages":
            ensure_packages(args.install, browser=args.browser)
            return 0
        with embedded_services(args.data_dir, install=False) as services:
            for key, value in services.env().items():
                print(f"{key}={value}", flush=True)
            print(f"# timescaledb: {services.timescaledb}; Ctrl-C stops both", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while services.postgres.running and services.mosquitto.running:
                    time.sleep(1)
        return 0
    except DevEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
