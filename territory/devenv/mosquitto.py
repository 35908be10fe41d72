"""The embedded Mosquitto: a private broker for development and tests.

It refuses anonymous clients and checks its ACL, as in production (docs/broker-auth.md), unless
TERRITORY_EMBEDDED_BROKER_AUTH=off opens it to anyone on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

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
from territory.devenv.packages import find_mosquitto

BROKER_AUTH_ENV = "TERRITORY_EMBEDDED_BROKER_AUTH"


class MosquittoServer(Server):
    """A private Mosquitto broker with persistence in `<data_dir>/mosquitto`, on 127.0.0.1."""

    NAME = "Mosquitto"
    WHAT = "Mosquitto broker"
    PRIVATE_DIR = "mosquitto"
    LOCK_FILE = ".mosquitto.lock"
    # Mosquitto saves its persistence file on the way out of a SIGTERM.
    STOP_SIGNAL = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int | None = None, auth: bool | None = None) -> None:
        super().__init__(data_dir, port)
        # Password and ACL enforced unless switched off (TERRITORY_EMBEDDED_BROKER_AUTH=off).
        self.auth = os.environ.get(BROKER_AUTH_ENV, "on") != "off" if auth is None else auth
        self._binary: Path | None = None

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
        return self._private()

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
    def _output_path(self) -> Path:
        return self.console_log_path

    # -- life cycle

    def _check_installed(self) -> None:
        self._binary = find_mosquitto()
        if self._binary is None:
            raise DevEnvError(
                "mosquitto not found (PATH, /usr/sbin): "
                + ("sudo " if not is_root() else "")
                + "apt-get install mosquitto mosquitto-clients"
            )

    def _start(self, timeout: float) -> None:
        binary = self._binary
        assert binary is not None  # _check_installed found it
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

        def spawn() -> None:
            self._write_conf(run_as)
            self._spawn(binary)

        self._launch(
            spawn=spawn,
            wait_ready=lambda: self._wait_ready(timeout),
            in_use=lambda: "in use" in tail([self.console_log_path, self.log_path], 10),
        )

    # -- internals

    @staticmethod
    def _run_as() -> RunAs | None:
        # As root, run as `mosquitto` (what the Debian package runs its broker as) or nobody,
        # rather than `user root`: a network listener has no business being root, even on
        # loopback, and PostgreSQL already needs the same /var/tmp arrangement anyway.
        return RunAs.first_of("mosquitto", "nobody") if is_root() else None

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

    def _write_conf(self, run_as: RunAs | None) -> None:
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
        pid = self._orphan_pid(self._pid_file(), str(self.conf_path))
        if pid is not None:
            stop_orphan(pid, self.STOP_SIGNAL, "Mosquitto broker", STOP_TIMEOUT_S)

    def _spawn(self, binary: Path) -> None:
        self._note(f"start on port {self.port}")
        self._proc = subprocess.Popen(
            [str(binary), "-c", str(self.conf_path)],
            stdout=self._open_log(),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            env=child_env(),
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
                    f"port {self.port}:\n{tail([self.console_log_path, self.log_path])}"
                )
            if port_open(self.port):
                return
            if time.monotonic() > deadline:
                raise DevEnvError(
                    f"Mosquitto did not accept connections on port {self.port} within "
                    f"{timeout:.0f} s:\n{tail([self.console_log_path, self.log_path])}"
                )
            time.sleep(0.05)

    def _forget(self) -> None:
        with contextlib.suppress(OSError):
            if self._dir is not None:
                self._pid_file().unlink(missing_ok=True)
