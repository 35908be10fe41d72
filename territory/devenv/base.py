"""What the embedded servers share: process helpers, the data-dir lock, the unprivileged user
a server runs as when we are root, the private directories under /var/tmp that user can reach,
and `Server`, the life cycle both servers follow (lock, spawn on a free port, stop, reap)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RUNTIME_ROOT = Path("/var/tmp")


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


def is_root() -> bool:
    return os.geteuid() == 0


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(paths: Sequence[Path], lines: int = 30) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        last = "\n".join(text.splitlines()[-lines:])
        parts.append(f"--- last lines of {path} ---\n{last}")
    return "\n".join(parts) if parts else "(no log written)"


def pid_alive(pid: int) -> bool:
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


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def stop_orphan(pid: int, sig: signal.Signals, what: str, timeout: float) -> None:
    """Stop a server left running by a process that died without stopping it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            break
        time.sleep(0.1)
    if pid_alive(pid):
        raise DevEnvError(f"could not stop the {what} left running as pid {pid}")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for server processes: the caller's, less libpq's PG* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
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
class RunAs:
    """The unprivileged user a server runs as when we are root."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def first_of(cls, *names: str) -> RunAs:
        for name in names:
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)
        raise DevEnvError(f"none of the users {', '.join(names)} exists to run a server as")

    @classmethod
    def of_uid(cls, uid: int) -> RunAs:
        pw = pwd.getpwuid(uid)
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def chown(self, path: Path) -> None:
        os.lchown(path, self.uid, self.gid)


class Lock:
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

# The pid files of the servers that keep their files in a private directory: PostgreSQL's own
# and the one MosquittoServer writes.
_SERVER_PID_FILES = ("postmaster.pid", "server.pid")
# The private directories' names under `<data_dir>` (and under the /var/tmp base when root).
_PRIVATE_DIR_NAMES = ("pg", "mosquitto")


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
    for pid_file in _SERVER_PID_FILES:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if pid_alive(int((directory / pid_file).read_text().split()[0])):
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
        if not any(_server_running_in(base / name) for name in _PRIVATE_DIR_NAMES):
            shutil.rmtree(base, ignore_errors=True)


def private_dir(data_dir: Path, name: str, as_root: bool) -> Path:
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


def remove_private_dir(data_dir: Path, name: str, real: Path) -> None:
    shutil.rmtree(real, ignore_errors=True)
    link = data_dir / name
    if link.is_symlink():
        link.unlink()
        base = real.parent
        leftovers = {p.name for p in base.iterdir()} if base.is_dir() else set()
        if leftovers <= {"origin"}:
            shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The life cycle both servers follow


class Server:
    """One server process on a data dir: at most one process runs it at a time (a flock),
    its files live in a private directory (`<data_dir>/<PRIVATE_DIR>`, see `private_dir`), it
    listens on 127.0.0.1:`port`, chosen at the first start when not given and kept after.

    A subclass names itself and says how to stop it; `_start` does its own work once the lock
    is held, usually through `_launch`.
    """

    NAME: ClassVar[str]  # in messages: "PostgreSQL", "Mosquitto"
    WHAT: ClassVar[str]  # what the lock protects, in messages: "PostgreSQL cluster"
    PRIVATE_DIR: ClassVar[str]  # its directory's name under the data dir
    LOCK_FILE: ClassVar[str]  # in the data dir
    STOP_SIGNAL: ClassVar[signal.Signals]

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._port_fixed = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = Lock(self.data_dir / self.LOCK_FILE)
        self._dir: Path | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def _output_path(self) -> Path:
        """Where the process's stdout and stderr go, and our own notes."""
        return self.log_path

    def _private(self) -> Path:
        """Its private directory (under /var/tmp when root; `<data_dir>/<PRIVATE_DIR>` links to
        it), worked out once."""
        if self._dir is None:
            self._dir = private_dir(self.data_dir, self.PRIVATE_DIR, is_root())
        return self._dir

    # -- life cycle

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.running:
            return
        self._check_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(self.WHAT)
        try:
            self._start(timeout)
        except BaseException:
            self._kill()
            self._close()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        try:
            if self._proc is not None:
                terminate(self._proc, self.STOP_SIGNAL, timeout)
        finally:
            self._close()

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        self.stop()
        self.start(timeout)

    def remove_data(self) -> None:
        """Delete its private directory (the server must be stopped)."""
        if self.running:
            raise DevEnvError(f"stop {self.NAME} before removing its data")
        remove_private_dir(self.data_dir, self.PRIVATE_DIR, self._private())
        self._dir = None

    # -- for subclasses

    def _check_installed(self) -> None:
        """Raise DevEnvError before taking the lock when the server cannot run at all."""

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def _launch(
        self,
        spawn: Callable[[], None],
        wait_ready: Callable[[], None],
        in_use: Callable[[], bool],
    ) -> None:
        """Spawn and wait until it serves; a port someone took since `free_port` chose it
        gets up to two more tries on other free ports (never when the port was given or has
        been used before: clients know that one)."""
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            if self.port is None or (attempt > 0 and not self._port_fixed):
                self.port = free_port()
            spawn()
            try:
                wait_ready()
                break
            except DevEnvError:
                taken = in_use()
                self._kill()
                if not taken or attempt == attempts - 1:
                    raise
        self._port_fixed = True

    def _open_log(self) -> IO[bytes]:
        if self._log is None or self._log.closed:
            self._log = self._output_path.open("ab")
        return self._log

    def _note(self, text: str) -> None:
        log = self._open_log()
        log.write(f"=== territory.devenv {time.strftime('%Y-%m-%d %H:%M:%S')}: {text}\n".encode())
        log.flush()

    @staticmethod
    def _orphan_pid(pid_file: Path, marker: str) -> int | None:
        """The pid in `pid_file` when it is alive and its command line holds `marker`: we hold
        the lock, so whoever started it has died and it is ours to stop."""
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) and marker in cmdline(pid) else None

    def _kill(self) -> None:
        if self._proc is not None:
            terminate(self._proc, self.STOP_SIGNAL, 10)
            self._proc = None

    def _forget(self) -> None:
        """Once the process is gone: remove what only describes a running server."""

    def _close(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            self._forget()
            if self._log is not None:
                self._log.close()
                self._log = None
            self._lock.release()
