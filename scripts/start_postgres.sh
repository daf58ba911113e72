#!/usr/bin/env bash
# Starts a PostgreSQL 15 server on 127.0.0.1 for tests and local runs, makes sure a login role and
# a database exist, and prints the DAGSTER_PG_* exports that deploy/postgres/dagster.yaml reads:
#
#     eval "$(scripts/start_postgres.sh)"
#
# Safe to run again and again: whatever is already installed, created or running is kept.
# As root (CI containers: no systemd, nothing installed) it installs the Debian server package when
# missing and starts the Debian default cluster. As any other user it runs a private server from a
# data directory of its own (initdb), since the system cluster is root's to start.
# Progress goes to stderr; stdout carries only the exports, so that `eval` sees nothing else.
#
# Settings (all optional):
#   INTELLIGENCE_PG_MAJOR     server major version              (15)
#   INTELLIGENCE_PG_ROLE      login role created for the tests  (intelligence)
#   INTELLIGENCE_PG_PASSWORD  its password: loopback test use only (intelligence-test)
#   INTELLIGENCE_PG_DATABASE  database owned by that role       (intelligence_test)
#   INTELLIGENCE_PG_DATA      data directory when not root      ($TMPDIR/intelligence-postgres-<uid>)
#   INTELLIGENCE_PG_PORT      port when not root                (15432; root uses the cluster's port)
#                             (below the ephemeral port range, where client sockets cannot hold it)
set -euo pipefail

PG_MAJOR="${INTELLIGENCE_PG_MAJOR:-15}"
ROLE="${INTELLIGENCE_PG_ROLE:-intelligence}"
PASSWORD="${INTELLIGENCE_PG_PASSWORD:-intelligence-test}"
DATABASE="${INTELLIGENCE_PG_DATABASE:-intelligence_test}"
HOST=127.0.0.1

log() { printf 'start_postgres: %s\n' "$*" >&2; }
fail() {
    log "error: $*"
    exit 1
}

# Two test sessions starting at once would race to start the server and create the same role and
# database. Commands that may leave a server running get `9>&-`: a server inheriting the lock's
# descriptor would hold the lock for as long as it runs.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/intelligence-start-postgres-$(id -u).lock"
    flock 9
fi

install_debian_server() {
    if [[ -x "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 || fail "PostgreSQL $PG_MAJOR is not installed and there is no apt-get to install it"
    export DEBIAN_FRONTEND=noninteractive
    local started=$SECONDS
    # Fresh containers ship with empty package lists; refresh only when apt does not know the package,
    # or when the lists it has are stale (the install fails on a vanished version).
    if ! apt-cache show "postgresql-$PG_MAJOR" >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -qq >&2
    fi
    log "installing postgresql-$PG_MAJOR"
    if ! apt-get install -y -qq --no-install-recommends "postgresql-$PG_MAJOR" >&2 9>&-; then
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "postgresql-$PG_MAJOR" >&2 9>&-
    fi
    log "installed postgresql-$PG_MAJOR in $((SECONDS - started)) s"
}

cluster_field() { # field number of `pg_lsclusters -h` for cluster $PG_MAJOR/main: 3 port, 4 status
    pg_lsclusters -h | awk -v major="$PG_MAJOR" -v field="$1" '$1 == major && $2 == "main" { print $field }'
}

start_debian_cluster() {
    if [[ -z "$(cluster_field 4)" ]]; then
        log "creating cluster $PG_MAJOR/main"
        pg_createcluster --encoding=UTF8 --locale=C.UTF-8 "$PG_MAJOR" main >&2
    fi
    if [[ "$(cluster_field 4)" != online* ]]; then
        log "starting cluster $PG_MAJOR/main"
        # The socket directory lives on a tmpfs in some containers and is gone after a restart.
        install -d -o postgres -g postgres -m 2775 /var/run/postgresql
        local log_file="/var/log/postgresql/postgresql-$PG_MAJOR-main.log"
        # --skip-systemctl-redirect: start the server directly, there is no systemd in containers.
        if ! pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start >&2 9>&-; then
            [[ -r "$log_file" ]] && tail -n 20 "$log_file" >&2
            fail "cluster $PG_MAJOR/main did not start (log: $log_file)"
        fi
    fi
    PORT="$(cluster_field 3)"
    BINDIR="/usr/lib/postgresql/$PG_MAJOR/bin"
    admin_psql() { (cd / && runuser -u postgres -- "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"); }
}

find_server_binaries() {
    local initdb_path
    if initdb_path="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$initdb_path")"
        return
    fi
    local candidate="/usr/lib/postgresql/$PG_MAJOR/bin"
    [[ -x "$candidate/initdb" ]] && { echo "$candidate"; return; }
    fail "no initdb found: install the PostgreSQL $PG_MAJOR server (Debian: apt-get install postgresql-$PG_MAJOR), or run as root to have it installed"
}

start_private_server() {
    BINDIR="$(find_server_binaries)"
    local data="${INTELLIGENCE_PG_DATA:-${TMPDIR:-/tmp}/intelligence-postgres-$(id -u)}"
    PORT="${INTELLIGENCE_PG_PORT:-15432}"
    if [[ ! -s "$data/PG_VERSION" ]]; then
        log "initdb $data"
        mkdir -p "$data"
        chmod 700 "$data"
        # Local socket connections are trusted: the socket lives inside the owner-only data directory.
        "$BINDIR/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            --encoding=UTF8 --locale=C >&2
    fi
    if ! "$BINDIR/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "starting $data on $HOST:$PORT"
        if ! "$BINDIR/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -o "-k $data -p $PORT -h $HOST" start >&2 9>&-; then
            tail -n 20 "$data/server.log" >&2 || true
            fail "server in $data did not start (log: $data/server.log)"
        fi
    fi
    # A server left running from an earlier call keeps the port it was started with.
    PORT="$(sed -n 4p "$data/postmaster.pid")"
    SOCKET_DIRECTORY="$data"
    admin_psql() { "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIRECTORY" -p "$PORT" -U postgres -d postgres "$@"; }
}

ensure_role_and_database() {
    # format(%I, %L) quotes names and the password; psql variables keep them out of the SQL text.
    admin_psql -v role="$ROLE" -v password="$PASSWORD" -v database="$DATABASE" >&2 <<'SQL'
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L LC_COLLATE %L LC_CTYPE %L TEMPLATE template0', :'database', :'role', 'UTF8', 'C', 'C')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SQL
    # Prove the exports work: a password login over TCP, the way Dagster connects.
    PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -At -h "$HOST" -p "$PORT" -U "$ROLE" -d "$DATABASE" \
        -c 'SELECT 1' >/dev/null || fail "role $ROLE cannot log in to $DATABASE on $HOST:$PORT"
}

started=$SECONDS
if [[ "$(id -u)" == 0 ]]; then
    install_debian_server
    start_debian_cluster
else
    start_private_server
fi
ensure_role_and_database
log "PostgreSQL $PG_MAJOR ready on $HOST:$PORT, database $DATABASE, role $ROLE ($((SECONDS - started)) s)"

printf 'export DAGSTER_PG_HOST=%q\n' "$HOST"
printf 'export DAGSTER_PG_PORT=%q\n' "$PORT"
printf 'export DAGSTER_PG_USERNAME=%q\n' "$ROLE"
printf 'export DAGSTER_PG_PASSWORD=%q\n' "$PASSWORD"
printf 'export DAGSTER_PG_DB=%q\n' "$DATABASE"
