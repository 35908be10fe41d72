"""The Debian packages the embedded servers need, and finding what is installed: a PostgreSQL
server >= 15, mosquitto and its clients, and Debian's Chromium for the page tests.

`./dev` asks `ensure_packages` (through `python -m territory.devenv ensure-packages`), so that
there is one answer to "which PostgreSQL/Mosquitto count as installed".
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from territory.devenv.base import DevEnvError, is_root

PG_MIN_MAJOR = 15
# The marker `_no_service_starts` writes, so that it only ever removes its own policy file.
_POLICY_MARKER = "# territory.devenv: keep apt-get from starting services"
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


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
    if not is_root():
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
