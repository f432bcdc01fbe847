#!/bin/bash
# Entrypoint of the mysql stand-in (MariaDB).  Mirrors the contract of the
# official mysql image's docker-entrypoint.sh: first start on an empty data
# directory initialises it from MYSQL_* variables (or their *_FILE twins), runs
# /docker-entrypoint-initdb.d/*.{sh,sql,sql.gz}, then execs the server.
set -eo pipefail
shopt -s nullglob

# shellcheck source=../common/entrypoint-lib.sh
. /usr/local/lib/entrypoint-lib.sh

# `docker run mysql --some-flag` means `mysqld --some-flag`.
if [ "${1:0:1}" = '-' ]; then
    set -- mysqld "$@"
fi

if [ "$1" != mysqld ] && [ "$1" != mariadbd ]; then
    exec "$@"
fi
shift

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
for v in MYSQL_ROOT_PASSWORD MYSQL_DATABASE MYSQL_USER MYSQL_PASSWORD MYSQL_ROOT_HOST; do
    file_env "$v"
done
: "${MYSQL_ROOT_HOST:=%}"

mkdir -p "$DATADIR" /run/mysqld
chown mysql:mysql "$DATADIR" /run/mysqld

sql_quote() { printf "%s" "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/''/g"; }

if [ ! -d "$DATADIR/mysql" ]; then
    if [ -z "$MYSQL_ROOT_PASSWORD" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ] \
        && [ -z "${MYSQL_RANDOM_ROOT_PASSWORD:-}" ]; then
        die "database is uninitialized and password option is not specified
    You need to specify one of MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD and MYSQL_RANDOM_ROOT_PASSWORD"
    fi
    if [ -n "${MYSQL_RANDOM_ROOT_PASSWORD:-}" ]; then
        MYSQL_ROOT_PASSWORD="$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)"
        log "GENERATED ROOT PASSWORD: $MYSQL_ROOT_PASSWORD"
    fi

    log "initialising database files in $DATADIR"
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null

    log "starting temporary server (no networking)"
    mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket="$SOCKET" &
    tmp_pid=$!
    for _ in $(seq 1 60); do
        mariadb-admin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 && break
        sleep 1
    done
    mariadb-admin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 || die "temporary server did not start"

    rootpw="$(sql_quote "$MYSQL_ROOT_PASSWORD")"
    {
        echo "SET @@SESSION.SQL_LOG_BIN=0;"
        echo "DELETE FROM mysql.user WHERE user NOT IN ('mysql.sys', 'mariadb.sys', 'root') OR host NOT IN ('localhost');"
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '${rootpw}';"
        if [ "$MYSQL_ROOT_HOST" != localhost ]; then
            echo "CREATE USER 'root'@'$(sql_quote "$MYSQL_ROOT_HOST")' IDENTIFIED BY '${rootpw}';"
            echo "GRANT ALL ON *.* TO 'root'@'$(sql_quote "$MYSQL_ROOT_HOST")' WITH GRANT OPTION;"
        fi
        if [ -n "$MYSQL_DATABASE" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
        fi
        if [ -n "$MYSQL_USER" ] && [ -n "$MYSQL_PASSWORD" ]; then
            echo "CREATE USER '$(sql_quote "$MYSQL_USER")'@'%' IDENTIFIED BY '$(sql_quote "$MYSQL_PASSWORD")';"
            if [ -n "$MYSQL_DATABASE" ]; then
                echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$(sql_quote "$MYSQL_USER")'@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket="$SOCKET" -uroot --binary-mode

    mysql_client=(mariadb --socket="$SOCKET" -uroot "-p$MYSQL_ROOT_PASSWORD")
    [ -n "$MYSQL_DATABASE" ] && mysql_client+=("$MYSQL_DATABASE")
    # shellcheck disable=SC1090  # init scripts are the user's own
    for f in /docker-entrypoint-initdb.d/*; do
      
    case "$f" in
            *.sh) log "running $f"; . "$f" ;;
            *.sql) log "running $f"; "${mysql_client[@]}" <"$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | "${mysql_client[@]}" ;;
            *) log "ignoring $f" ;;
        esac
    done

    mariadb-admin --socket="$SOCKET" -uroot "-p$MYSQL_ROOT_PASSWORD" shutdown
    wait "$tmp_pid" || true
    log "init process done; ready for start up"
fi

unset MYSQL_ROOT_PASSWORD MYSQL_PASSWORD
exec mariadbd --user=mysql --datadir="$DATADIR" --socket="$SOCKET" \
    --bind-address=0.0.0.0 --port=3306 "$@"
