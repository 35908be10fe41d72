"""Write the broker's files atomically and make Mosquitto reload them."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
SERVICES_FILE = "services.passwd"


def write_atomic(path: Path, text: str) -> None:
    """Write beside `path`, fsync, rename over it: Mosquitto never reads half a file.

    The broker may run as another user (the Debian package's `mosquitto`, a container's
    uid): as root the file takes the owner of its directory and stays private to it;
    otherwise it is readable (0644) and the directory's own mode keeps others out.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.geteuid() == 0:
            st = path.parent.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def reload_broker(pid_file: str) -> bool:
    """SIGHUP to the pid in `pid_file`: Mosquitto rereads its password and ACL files and
    closes the sessions of accounts that are gone. False when there is nobody to signal."""
    if not pid_file:
        return False
    try:
        pid = int(Path(pid_file).read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError):
        return False
    return True
