#!/usr/bin/env bash
# Owners and modes for the compose deployment's secret files (docker/README.md, "Start it").
# Compose without Swarm bind-mounts a secret file as it is on the host, so its owner and mode are
# what the container sees. Each file is readable by the images that read it and by nobody else:
#   - read by our images only (uid 10001): owner 10001, 0400;
#   - read by the official mysql image only (its mysql user, uid 999): owner 999, 0400;
#   - read by our images and a database image (whose entrypoint re-reads it after dropping to
#     uid/gid 999): owner 10001, group 999, 0440.
# Usage: scripts/secure_secrets.sh [DIR]   (default ./secrets; run as root, e.g. with sudo)
set -euo pipefail
dir="${1:-./secrets}"
ours=(HUBSPOT_ACCESS_TOKEN KAGGLE_KEY KAGGLE_API_TOKEN ETL_ALERT_WEBHOOK_URL ETL_DATADOG_API_KEY)
database_only=(MYSQL_ROOT_PASSWORD)
shared=(ETL_DATABASE_PASSWORD DAGSTER_PG_PASSWORD)
for name in "${ours[@]}" "${database_only[@]}" "${shared[@]}"; do
    [ -f "$dir/$name" ] || { echo "secure_secrets: missing $dir/$name (an empty file means not set)" >&2; exit 1; }
done
for name in "${ours[@]}"; do chown 10001:10001 "$dir/$name"; chmod 0400 "$dir/$name"; done
for name in "${database_only[@]}"; do chown 999:999 "$dir/$name"; chmod 0400 "$dir/$name"; done
for name in "${shared[@]}"; do chown 10001:999 "$dir/$name"; chmod 0440 "$dir/$name"; done
chmod 0755 "$dir"  # the files' own modes decide who reads them
