#!/bin/sh
# Entrypoint of the broker container (docker-compose.yml): run Mosquitto, and make it reload
# its password and ACL files (SIGHUP) whenever the territory worker has rewritten them in the
# shared volume. The worker renders them from the registry (docs/broker-auth.md) and replaces
# each file by a rename, so a change is a new checksum; polling once a second keeps
# revocation within the platform's 5 s. POSIX sh: runs on the image's busybox.
set -eu

CONF="${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}"
AUTH_DIR="${BROKER_AUTH_DIR:-/mosquitto/auth}"
POLL_S="${BROKER_POLL_S:-1}"

state() {
    cksum "$AUTH_DIR/passwd" "$AUTH_DIR/acl" 2>/dev/null || true
}

mosquitto -c "$CONF" &
pid=$!
# docker stop sends SIGTERM to this script (PID 1): pass it on, so the broker saves its state.
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT

last="$(state)"
while kill -0 "$pid" 2>/dev/null; do
    sleep "$POLL_S" || true
    now="$(state)"
    if [ "$now" != "$last" ]; then
        last="$now"
        kill -HUP "$pid" 2>/dev/null || true
        echo "reload-on-change: broker accounts changed, SIGHUP sent to mosquitto ($pid)"
    fi
done
status=0
wait "$pid" || status=$?
exit "$status"
