"""Retention for the containers DockerRunLauncher leaves behind.

DockerRunLauncher starts one container per run and never removes it: the exited
container is what run monitoring inspects, and its logs are the first thing to
read after a crash.  This janitor keeps them for a while, then removes them:

* exited/dead containers labelled ``dagster/run_id`` whose run finished more than
  ``ETL_RUN_CONTAINER_RETENTION_HOURS`` (default 72) hours ago are removed;
* at most ``ETL_RUN_CONTAINER_KEEP_MAX`` (default 200) finished run containers are
  kept, the newest first.

It only ever touches containers carrying the ``dagster/run_id`` label, never a
running one.  Every ``ETL_RUN_JANITOR_INTERVAL_SECONDS`` (default 600) it sweeps
once and touches ``/tmp/run_janitor.heartbeat`` (the compose healthcheck reads
it).  ``--once`` sweeps a single time and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import docker
import docker.errors

LABEL = "dagster/run_id"
HEARTBEAT = Path("/tmp/run_janitor.heartbeat")
log = logging.getLogger("run_janitor")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default


def _finished_at(container) -> datetime | None:
    raw = (container.attrs.get("State") or {}).get("FinishedAt") or ""
    if not raw or raw.startswith("0001-"):
        return None
    raw = raw.rstrip("Z")
    # Docker gives nanoseconds; fromisoformat takes at most microseconds.
    if "." in raw:
        head, frac = raw.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())[:6]
        tz = frac[len("".join(ch for ch in frac if ch.isdigit())):]
        raw = f"{head}.{digits}{tz}"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def sweep(client, retention_hours: float, keep_max: int) -> int:
    """Remove expired run containers; returns how many were removed."""
    now = datetime.now(timezone.utc)
    finished = []
    # Filter on the status here: not every engine's API takes status=dead.
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        if container.status in ("exited", "dead"):
            finished.append((_finished_at(container) or now, container))
    finished.sort(key=lambda item: item[0], reverse=True)

    removed = 0
    for index, (ended, container) in enumerate(finished):
        age_hours = (now - ended).total_seconds() / 3600
        if age_hours < retention_hours and index < keep_max:
            continue
        run_id = container.labels.get(LABEL, "?")
        try:
            container.remove(v=False)
            removed += 1
            log.info(
                "removed container %s of run %s (finished %.1f h ago)",
                container.short_id, run_id, age_hours,
            )
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove container %s: %s", container.short_id, exc)
    return removed


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=os.environ.get("ETL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    retention = _env_number("ETL_RUN_CONTAINER_RETENTION_HOURS", 72)
    keep_max = int(_env_number("ETL_RUN_CONTAINER_KEEP_MAX", 200))
    interval = _env_number("ETL_RUN_JANITOR_INTERVAL_SECONDS", 600)
    client = docker.from_env()

    stopping = False

    def _stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "run containers kept %.1f h (at most %d); sweeping every %.0f s",
        retention, keep_max, interval,
    )
    while True:
        try:
            sweep(client, retention, keep_max)
            HEARTBEAT.touch()
        except Exception:  # keep sweeping: the engine may be restarting
            log.exception("sweep failed")
        if "--once" in argv or stopping:
            return 0
        deadline = time.monotonic() + interval
        while not stopping and time.monotonic() < deadline:
            time.sleep(1)
        if stopping:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
