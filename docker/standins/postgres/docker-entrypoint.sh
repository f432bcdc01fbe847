#!/bin/bash
# Entrypoint of the postgres stand-in (Debian's PostgreSQL).  Mirrors the
# contract of the official postgres image's docker-entrypoint.sh: first start on
# an empty PGDATA runs initdb from POSTGRES_* variables (or their *_FILE twins),
# creates POSTGRES_DB, runs /docker-entrypoint-initdb.d/*.{sh,sql,sql.gz}, then
# execs the server as the postgres user.
set -eo pipefail
shopt -s nullglob

# shellcheck source=../common/entrypoint-lib.sh
. /usr/local/lib/entrypoint-lib.sh

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        die "database is uninitialized and superuser password is not specified.
    You must specify POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value, or
    POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password."
    fi
    log "initdb in $PGDATA"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    # shellcheck disable=SC2086
    as_postgres initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust $POSTGRES_INITDB_ARGS >/dev/null
    rm -f "$pwfile"
    {
        echo
        echo "host all all all $POSTGRES_HOST_AUTH_METHOD"
    } >>"$PGDATA/pg_hba.conf"

    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 -h /var/run/postgresql --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ "$POSTGRES_DB" != postgres ]; then
        echo 'CREATE DATABASE :"db";' \
            | as_postgres "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" >/dev/null
    fi
    # shellcheck disable=SC1090  # init scripts are the user's own
    for f in /docker-entrypoint-initdb.d/*; do
      
    case "$f" in
            *.sh) log "running $f"; . "$f" ;;
            *.sql) log "running $f"; as_postgres "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | as_postgres "${psql[@]}" --dbname "$POSTGRES_DB" ;;
            *) log "ignoring $f" ;;
        esac
    done
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "init process complete; ready for start up"
fi

unset POSTGRES_PASSWORD
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c listen_addresses='*' \
    -c unix_socket_directories=/var/run/postgresql "$@"
