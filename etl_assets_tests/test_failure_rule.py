"""The one failure rule against the real things, source by source: the real clients, the local
HubSpot server, MariaDB, a local webhook, the secrets resource.

Transient: retried in the step, then (still failing) left to the step's RetryPolicy.
Permanent: one attempt, the step fails once (no STEP_UP_FOR_RETRY). The classification of every
source's exceptions, built as the clients raise them, is in test_errors.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from etl_assets.errors import (
    PERMANENT,
    TRANSIENT,
    PermanentError,
    TransientError,
    classify,
)
from etl_assets.hubspot.client import HubSpotApiError
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings
from etl_assets.sensors import AlertNotDelivered, post_alert
from etl_assets_tests.assets.test_assets import failure_message, run_daily_etl
from etl_assets_tests.assets.test_hubspot_property_types import write_map
from etl_assets_tests.conftest import SHORT_RETRIES, run_dagster
from etl_assets_tests.hubspot.test_sync import api_for
from etl_assets_tests.servers.hubspot_server import PROPERTIES_PATH, HubSpotServer

QUICK = RetrySettings(attempts=3, max_seconds=10, initial_delay=0.05, max_delay=0.1)
LOAD_ONLY = [dg.AssetKey("kaggle_dataset"), dg.AssetKey("contacts_table")]
SYNC_ONLY = [dg.AssetKey("hubspot_contacts")]


class Recorded(logging.Handler):
    """The in-step retries' warnings ("... failed (attempt 1/3, ...); retrying in ...")."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def recording_log() -> tuple[logging.Logger, Recorded]:
    log = logging.getLogger(f"test_failure_rule.{time.monotonic_ns()}")
    handler = Recorded()
    log.addHandler(handler)
    log.propagate = False
    return log, handler


def step_retries(result, step: str | None = None) -> int:
    return sum(
        event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY and (step is None or event.step_key == step)
        for event in result.all_events
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- HubSpot


def test_hubspot_400_on_property_creation_is_one_request_and_permanent():
    with HubSpotServer() as server:
        api = api_for(server)
        with pytest.raises(HubSpotApiError) as caught:
            api.create_contact_property("Not-A-Name", "Bad", "string")  # the server's real 400
    assert caught.value.error.status == 400 and classify(caught.value) == PERMANENT
    assert server.count_requests(PROPERTIES_PATH) == 1 and api.retried == 0


def test_hubspot_503_on_property_creation_is_retried_in_the_step():
    with HubSpotServer() as server:
        server.fail_next(503, path_contains=PROPERTIES_PATH)
        api = api_for(server)
        created = api.create_contact_property("source_customer_id", "Source customer ID", "string")
    assert created.name == "source_customer_id"
    assert server.count_requests(PROPERTIES_PATH) == 2 and api.retried == 1


def test_hubspot_503_that_outlasts_the_in_step_retries_leaves_transient():
    with HubSpotServer() as server:
        server.fail_next(503, count=10, path_contains=PROPERTIES_PATH)
        with pytest.raises(HubSpotApiError) as caught:
            api_for(server).create_contact_property("source_customer_id", "Source customer ID", "string")
    assert caught.value.error.status == 503 and classify(caught.value) == TRANSIENT


def test_a_run_whose_property_creation_gets_a_400_fails_once_without_step_retries(
    hubspot_env, mariadb_url, tmp_path, monkeypatch
):
    # The map names a property HubSpot refuses to create (400 VALIDATION_ERROR), not retried three times.
    write_map(tmp_path, monkeypatch, customer_id={"hubspot": "Source-Customer-ID"})
    assert run_daily_etl(asset_selection=LOAD_ONLY).success
    hubspot_env.reset_log()
    started = time.monotonic()
    result = run_daily_etl(asset_selection=SYNC_ONLY)
    assert not result.success
    assert step_retries(result) == 0 and time.monotonic() - started < 60  # a step retry waits >= 120 s
    assert "hubspot_contacts: HubSpotApiError: 400 VALIDATION_ERROR" in failure_message(result)
    posts = [r for r in hubspot_env.request_log if r.method == "POST" and r.path.startswith(PROPERTIES_PATH)]
    assert len(posts) == 1 and hubspot_env.count_requests("/batch/") == 0


# ---------------------------------------------------------------- MariaDB


def test_real_mariadb_errors_are_classified(mariadb_url):
    url = sa.make_url(mariadb_url)
    refused = url.set(host="127.0.0.1", port=free_port())
    cases = [
        (refused, "SELECT 1", 2003, TRANSIENT),
        (url.set(username="nobody_here", password="wrong"), "SELECT 1", 1045, PERMANENT),
        (url.set(database="etl_no_such_database"), "SELECT 1", 1049, PERMANENT),
        (url, "SELEC 1", 1064, PERMANENT),
        (url, "SELECT * FROM no_such_table", 1146, PERMANENT),
    ]
    for target, statement, code, verdict in cases:
        engine = sa.create_engine(target, connect_args={"connect_timeout": 5})
        with pytest.raises(sa_exc.DBAPIError) as caught, engine.connect() as conn:
            conn.exec_driver_sql(statement)
        engine.dispose()
        assert caught.value.orig.args[0] == code, caught.value
        assert classify(caught.value) == verdict, (code, caught.value)


def test_a_real_lock_wait_timeout_is_transient(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE locked (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        conn.exec_driver_sql("INSERT INTO locked VALUES (1, 0)")
    with engine.connect() as holder, engine.connect() as waiter:
        holder.exec_driver_sql("START TRANSACTION")
        holder.exec_driver_sql("UPDATE locked SET v = 1 WHERE id = 1")
        waiter.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
        with pytest.raises(sa_exc.DBAPIError) as caught:
            waiter.exec_driver_sql("UPDATE locked SET v = 2 WHERE id = 1")
        holder.rollback()
    engine.dispose()
    assert caught.value.orig.args[0] == 1205 and classify(caught.value) == TRANSIENT


@pytest.fixture
def database(clean_env, monkeypatch):
    def make(url: str) -> DatabaseResource:
        monkeypatch.setenv("ETL_DATABASE_URL", url)
        return DatabaseResource(secrets=SecretsResource())

    return make


def test_a_refused_connection_is_retried_in_the_step_then_left_transient(database, mariadb_url):
    url = sa.make_url(mariadb_url).set(port=free_port()).render_as_string(hide_password=False)
    log, recorded = recording_log()
    with pytest.raises(TransientError, match=r"cannot connect to the database .*Connection refused"):
        database(url).check_connection(QUICK, log)
    assert len([m for m in recorded.messages if "failed (attempt" in m]) == QUICK.attempts - 1


def test_a_refused_login_is_one_attempt_and_permanent(database, mariadb_url):
    url = sa.make_url(mariadb_url).set(username="nobody_here", password="wrong-pw-4242")
    log, recorded = recording_log()
    with pytest.raises(PermanentError, match=r"cannot connect to the database .*\*\*\*.*Access denied") as caught:
        database(url.render_as_string(hide_password=False)).check_connection(QUICK, log)
    assert recorded.messages == [] and "wrong-pw-4242" not in str(caught.value)


def test_a_refused_login_fails_the_load_once_without_step_retries(clean_env, mariadb_url, monkeypatch):
    url = sa.make_url(mariadb_url).set(username="nobody_here", password="wrong-pw-4242")
    monkeypatch.setenv("ETL_DATABASE_URL", url.render_as_string(hide_password=False))  # the embedded sample
    result = run_daily_etl(asset_selection=LOAD_ONLY)
    assert not result.success and step_retries(result) == 0
    assert "contacts_table: cannot connect to the database" in failure_message(result)


class Proxy:
    """A TCP port that refuses connections until `open()`, then forwards them to MariaDB."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.port, self.target = port, target
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._server is not None:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()


@pytest.mark.e2e
def test_a_database_refusing_connections_longer_than_the_in_step_retries_is_ridden_out_by_step_retries(
    clean_env, mariadb_url, monkeypatch
):
    # The step RetryPolicy is built when the definitions load: the run loads them in a
    # `dagster asset materialize` process that sees these settings.
    real = sa.make_url(mariadb_url)
    proxy = Proxy(free_port(), (real.host or "127.0.0.1", real.port or 3306))
    monkeypatch.setenv(
        "ETL_DATABASE_URL", real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
    for name, value in SHORT_RETRIES.items():
        monkeypatch.setenv(name, value)

    def open_after_first_step_retry() -> None:  # the refusal outlasts the in-step retries
        deadline = time.monotonic() + 240
        with dg.DagsterInstance.get() as instance:
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                if runs and instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY):
                    proxy.open()
                    return
                time.sleep(0.2)

    watcher = threading.Thread(target=open_after_first_step_retry, daemon=True)
    watcher.start()
    try:
        result = run_dagster(
            "asset",
            "materialize",
            "-m",
            "etl_assets",
            "--select",
            "kaggle_dataset,contacts_table",
            env=dict(os.environ),
            timeout=300,
        )
    finally:
        watcher.join(timeout=5)
        proxy.close()
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        retries = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        messages = [event.user_message or "" for event in instance.all_logs(run.run_id)]
    assert len(retries) >= 1 and {event.step_key for event in retries} == {"contacts_table"}
    assert any("failed (attempt 1/2" in message and "connecting to" in message for message in messages), output
    with sa.create_engine(mariadb_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM contacts").scalar() == 988


# ---------------------------------------------------------------- alert webhook


def test_an_alert_answered_503_is_retried_and_delivered(webhook):
    webhook.answers[:] = [503, 429]
    post_alert(webhook.url, {"text": "x"}, QUICK)
    assert len(webhook.received) == 3


def test_an_alert_answered_404_is_not_retried(webhook):
    webhook.answers[:] = [404]
    with pytest.raises(AlertNotDelivered, match="answered 404"):
        post_alert(webhook.url, {"text": "x"}, QUICK)
    assert len(webhook.received) == 1


# ---------------------------------------------------------------- secret stores


class FlakyStore:
    """A remote secret store's reader (secret_backends' protocol) failing as `errors` says, then answering."""

    def __init__(self, errors: list[Exception]):
        self.errors, self.fetches = errors, 0

    def source(self, name: str) -> str:
        return "bundle"

    def where(self, name: str) -> str:
        return f"no key {name} in bundle"

    def fetch(self, source: str):
        self.fetches += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"HUBSPOT_ACCESS_TOKEN": "tok-from-store"}


@pytest.mark.parametrize(
    ("errors", "fetches", "outcome"),
    [
        ([TransientError("Vault is sealed or unavailable (503)")], 2, "tok-from-store"),
        ([PermanentError("permission denied")], 1, PermanentError),
    ],
)
def test_a_secret_store_error_is_retried_in_the_step_only_when_transient(
    clean_env, monkeypatch, errors, fetches, outcome
):
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "vault")
    monkeypatch.setenv("ETL_RETRY_ATTEMPTS", "3")
    store = FlakyStore(errors)
    monkeypatch.setattr("etl_assets.resources.secrets._reader", lambda backend: store)
    secrets = SecretsResource()
    if outcome is PermanentError:
        with pytest.raises(PermanentError):
            secrets.get("HUBSPOT_ACCESS_TOKEN")
    else:
        assert secrets.get("HUBSPOT_ACCESS_TOKEN") == outcome
    assert store.fetches == fetches
