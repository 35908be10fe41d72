# Image for every `territory` process (migrate, ingest, api, simulate, run).
#   docker build -t territory-telemetry .
#   docker run --rm territory-telemetry              # prints `territory --help`
# docker-compose.yml builds it and sets the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Unprivileged runtime user with a fixed uid, so volume ownership is predictable.
RUN groupadd --system --gid 10001 territory \
 && useradd --system --uid 10001 --gid territory --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin territory

WORKDIR /app

# Third-party dependencies first, read from pyproject.toml alone: this layer is rebuilt only
# when the dependency list changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The whole repository (minus .dockerignore): the package is installed in editable mode, and
# `territory migrate` reads the SQL files in migrations/ from the tree.
COPY . .
RUN pip install --no-cache-dir -e . \
 && mkdir -p /var/lib/territory \
 && chown territory:territory /var/lib/territory

# Local state (only used by `territory run`); writable by the runtime user.
ENV TERRITORY_DATA_DIR=/var/lib/territory

# Numeric, so runtimes that enforce non-root (runAsNonRoot) can verify it.
USER 10001:10001

CMD ["territory", "--help"]
