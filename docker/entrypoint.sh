#!/bin/sh
# Entrypoint of both images (user code / run workers, and the Dagster system
# image).  Two chores, then exec the command:
#
# 1. Variables of the pipeline that arrive EMPTY are removed.  Compose writes an
#    unset `${VAR:-}` as "", and DockerRunLauncher copies every variable listed
#    in its env_vars into the run container whether set or not; for the package
#    and its client libraries (kagglesdk rejects KAGGLE_API_ENVIRONMENT="")
#    empty must mean "not set".  Not in the Dagster system image
#    (ENTRYPOINT_KEEP_EMPTY_VARS=1): the daemon is where DockerRunLauncher copies
#    env_vars from, and it refuses a listed name that is not set at all.
# 2. DAGSTER_PG_PASSWORD is read from DAGSTER_PG_PASSWORD_FILE (a compose secret)
#    so the password never sits in a container's environment config; dagster.yaml
#    reads it with `env: DAGSTER_PG_PASSWORD`.
set -eu

[ "${ENTRYPOINT_KEEP_EMPTY_VARS:-0}" = 1 ] ||
for name in $(env | sed -n 's/^\(\(ETL\|KAGGLE\|HUBSPOT\|AWS\|DAGSTER_PG\)_[A-Za-z0-9_]*\)=$/\1/p'); do
    unset "$name"
done

if [ -z "${DAGSTER_PG_PASSWORD:-}" ] && [ -n "${DAGSTER_PG_PASSWORD_FILE:-}" ]; then
    if [ -r "$DAGSTER_PG_PASSWORD_FILE" ]; then
        DAGSTER_PG_PASSWORD="$(cat "$DAGSTER_PG_PASSWORD_FILE")"
        export DAGSTER_PG_PASSWORD
    else
        echo "entrypoint: DAGSTER_PG_PASSWORD_FILE=$DAGSTER_PG_PASSWORD_FILE is not readable by uid $(id -u)" >&2
    fi
fi

exec "$@"
