"""The schedule really fires: `dagster-daemon run` with ETL_SCHEDULE_CRON set to every minute starts
`daily_etl` by itself, and that run succeeds against MariaDB and the local Kaggle/HubSpot servers.

Also home to `dagster_service`, which test_ui.py uses too: a `dagster` CLI process in its own
process group with its output in test-artifacts/, torn down (whole group) even when the test fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
import sqlalchemy as sa

from etl_assets_tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts"
SCHEDULE_NAME = "daily_etl_schedule"
T = TypeVar("T")


def prepare_dagster_home(env: dict[str, str]) -> Path:
    """DAGSTER_HOME (a tmp dir from clean_env) with the repo's dagster.yaml, as `make setup` does,
    and its SQLite storage created here, before any service starts.

    The test process reads the instance while the daemon (and its code server) start; on a fresh
    home all of them would create the SQLite databases at once, and two alembic stamps in one
    database make every later load fail ("Version table 'alembic_version' has more than one head").
    """
    import dagster as dg

    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)  # run storage
        instance.all_instigator_state()  # schedule storage
        instance.get_latest_materialization_event(dg.AssetKey("kaggle_dataset"))  # event log storage
    return home


def artifacts_dir(name: str) -> Path:
    path = ARTIFACTS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def log_tail(path: Path, chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text[-chars:]


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT (Ctrl-C) to the whole group, then SIGKILL to the group and every descendant seen."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in descendants:  # anything that left the group (none should) goes too
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    psutil.wait_procs(descendants, timeout=10)


@contextlib.contextmanager
def dagster_service(
    command: str, *args: str, env: dict[str, str], log_path: Path, grace: float = 5
) -> Iterator[subprocess.Popen]:
    """`command` (dagster, dagster-daemon, ...) from this interpreter's venv, as a user starts it."""
    executable = Path(sys.executable).with_name(command)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(executable), *args],
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        _stop_group(proc, grace)
        log.close()


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 1.0,
    alive: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and the service's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            pytest.fail(
                f"{what}: the dagster process exited with {alive.returncode}\n{log_tail(log_path) if log_path else ''}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{log_tail(log_path) if log_path else ''}")
        time.sleep(interval)


def failure_summary(instance, run_id: str) -> str:
    """The run's step and run failure messages, for an assertion message."""
    return "\n".join(
        f"{entry.dagster_event.event_type_value} {entry.step_key or ''}: {entry.message}"
        for entry in instance.all_logs(run_id)
        if entry.dagster_event and entry.dagster_event.is_failure
    )[-6000:]


def _scheduled_runs(instance):
    import dagster as dg

    return instance.get_runs(filters=dg.RunsFilter(job_name="daily_etl", tags={"dagster/schedule_name": SCHEDULE_NAME}))


@pytest.mark.e2e
def test_daemon_fires_the_schedule_and_the_run_succeeds(pipeline_env, monkeypatch, mariadb_url, hubspot_server):
    import dagster as dg

    monkeypatch.setenv("ETL_SCHEDULE_CRON", "* * * * *")
    monkeypatch.setenv("ETL_SCHEDULE_TZ", "UTC")
    home = prepare_dagster_home(pipeline_env)
    out = artifacts_dir("schedule_daemon")
    log_path = out / "dagster-daemon.log"
    started = time.time()

    with (
        dagster_service("dagster-daemon", "run", "-m", "etl_assets", env=dict(os.environ), log_path=log_path) as daemon,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        # The first tick is the first minute boundary after the daemon has seen the schedule: up to
        # ~60 s plus the daemon's start-up.
        run = wait_for(
            "a run of daily_etl started by the schedule",
            lambda: _scheduled_runs(instance),
            timeout=150,
            alive=daemon,
            log_path=log_path,
        )[-1]
        fired = time.time()
        finished = wait_for(
            f"scheduled run {run.run_id} to finish",
            lambda: r if (r := instance.get_run_by_id(run.run_id)).is_finished else None,
            timeout=150,
            alive=daemon,
            log_path=log_path,
        )

        assert finished.status == dg.DagsterRunStatus.SUCCESS, (
            f"{finished.status}: {failure_summary(instance, run.run_id)}\n{log_tail(log_path)}"
        )

        # Started by the schedule, for a tick of the cron in the environment.
        assert finished.job_name == "daily_etl"
        assert finished.tags["dagster/schedule_name"] == SCHEDULE_NAME
        assert finished.tags.get("dagster/tick"), "no tick id: not a scheduled run"
        # The tick it ran for: a minute boundary ("* * * * *") after the daemon started.
        scheduled_for = dt.datetime.fromisoformat(finished.tags[".dagster/scheduled_execution_time"])
        assert scheduled_for.second == 0 and scheduled_for.microsecond == 0, scheduled_for
        assert started - 60 <= scheduled_for.timestamp() <= fired, (scheduled_for, started, fired)
        # It materialized all three assets.
        for asset in ("kaggle_dataset", "contacts_table", "hubspot_contacts"):
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None and event.run_id == run.run_id, f"{asset} not materialized by {run.run_id}"
        (out / "run.txt").write_text(
            f"run {run.run_id} status {finished.status.value}\ntags {dict(finished.tags)}\n"
            f"daemon start to run created: {fired - started:.1f}s\n"
        )

    # ...into MariaDB and the HubSpot stand-in.
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            contacts = conn.exec_driver_sql("SELECT COUNT(*) FROM contacts").scalar()
    finally:
        engine.dispose()
    assert contacts > 0
    assert len(hubspot_server.contacts_snapshot()) == contacts
