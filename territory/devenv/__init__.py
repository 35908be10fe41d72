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

Modules: `base` (process helpers, the data-dir lock, run-as and the /var/tmp directories, the
`Server` life cycle both servers share), `packages` (finding and installing the Debian
packages), `postgres`, `mosquitto`, `services` (both together), `__main__` (the command line).
"""

from territory.devenv.base import (
    LOOPBACK,
    RUNTIME_ROOT,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    DevEnvError,
    Server,
    free_port,
)
from territory.devenv.mosquitto import BROKER_AUTH_ENV, MosquittoServer
from territory.devenv.packages import (
    PG_MIN_MAJOR,
    PostgresInstall,
    ensure_packages,
    find_chromium,
    find_mosquitto,
    find_postgres,
    missing_packages,
)
from territory.devenv.postgres import PG_DATABASE, PG_USER, TIMESCALEDB_ENV, PostgresServer
from territory.devenv.services import Services, embedded_services

__all__ = [
    "BROKER_AUTH_ENV",
    "LOOPBACK",
    "PG_DATABASE",
    "PG_MIN_MAJOR",
    "PG_USER",
    "RUNTIME_ROOT",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "TIMESCALEDB_ENV",
    "DevEnvError",
    "MosquittoServer",
    "PostgresInstall",
    "PostgresServer",
    "Server",
    "Services",
    "embedded_services",
    "ensure_packages",
    "find_chromium",
    "find_mosquitto",
    "find_postgres",
    "free_port",
    "missing_packages",
]
