"""DatabaseResource: masked descriptions, defaults, TLS settings, LOAD DATA LOCAL kept to the staging
connection and its one file, and the lock that serialises concurrent runs."""

import logging
import os
import stat
import threading
import time

import pytest
import sqlalchemy as sa
from pymysql.constants import CLIENT

from etl_assets.assets.contacts import load_source
from etl_assets.contacts.loader import load_contacts
from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.staging import LoadDataWriter, StagingConnection
from etl_assets.errors import PermanentError
from etl_assets.logs.redaction import redact
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings
from etl_assets_tests.conftest import SAMPLE_CSV

LOG = logging.getLogger(__name__)


@pytest.fixture
def resource(clean_env, monkeypatch):
    """A DatabaseResource for ETL_DATABASE_URL=url (None: the embedded SQLite default)."""
    made = []

    def make(url: str | None = None) -> DatabaseResource:
        if url:
            monkeypatch.setenv("ETL_DATABASE_URL", url)
        made.append(DatabaseResource(secrets=SecretsResource()))
        return made[-1]

    yield make
    for database in made:
        database.teardown_after_execution(None)


def test_passwords_are_masked_even_in_urls_sqlalchemy_cannot_parse(resource):
    assert redact("mysql+pymysql://etl:p@ss:w0rd@db:3306/etl") == "mysql+pymysql://etl:***@db:3306/etl"
    assert resource("mysql+pymysql://etl:hunter2@db/etl").describe() == "mysql+pymysql://etl:***@db/etl"


def test_password_kept_apart_from_the_url_is_added_at_connect_time(resource, monkeypatch):
    monkeypatch.setenv("ETL_DATABASE_PASSWORD", "from-the-secret-store")
    database = resource("mysql+pymysql://etl@db/etl")
    assert database.engine.url.password == "from-the-secret-store"
    assert "from-the-secret-store" not in database.describe() + repr(database.engine)


def test_default_is_sqlite_in_the_data_dir(resource, tmp_path):
    database = resource()
    assert database.is_default()
    assert database.describe() == f"sqlite:///{tmp_path / 'etl_data' / 'etl.sqlite'}"
    assert database.staging_engine is database.engine


def test_default_sqlite_file_is_owner_only_after_a_load(resource, tmp_path):
    previous = os.umask(0o022)  # the common umask, which would leave a new file world-readable
    try:
        report = load_source(resource(), SAMPLE_CSV, load_column_map(None), RetrySettings(), "run", LOG)
    finally:
        os.umask(previous)
    assert report.contacts_after == 988
    database_file = tmp_path / "etl_data" / "etl.sqlite"
    assert stat.S_IMODE(database_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("missing", ["ETL_DATABASE_SSL_CA", "ETL_DATABASE_SSL_CERT", "ETL_DATABASE_SSL_KEY"])
def test_a_tls_file_that_does_not_exist_is_a_permanent_error_naming_its_setting(
    resource, monkeypatch, tmp_path, missing
):
    for name in ("ETL_DATABASE_SSL_CA", "ETL_DATABASE_SSL_CERT", "ETL_DATABASE_SSL_KEY"):
        (tmp_path / name).write_text("PEM")
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv(missing, str(tmp_path / "nowhere.pem"))
    with pytest.raises(PermanentError, match=f"{missing} names no file: .*nowhere.pem"):
        _ = resource("mysql+pymysql://etl@db/etl").engine  # building the engine reads the TLS settings


def test_a_client_certificate_needs_the_ca_and_its_key(resource, monkeypatch, tmp_path):
    pem = tmp_path / "client.pem"
    pem.write_text("PEM")
    monkeypatch.setenv("ETL_DATABASE_SSL_CERT", str(pem))
    with pytest.raises(PermanentError, match="need ETL_DATABASE_SSL_CA"):
        _ = resource("mysql+pymysql://etl@db/etl").engine  # building the engine reads the TLS settings
    monkeypatch.setenv("ETL_DATABASE_SSL_CA", str(pem))
    with pytest.raises(PermanentError, match="set both ETL_DATABASE_SSL_CERT and ETL_DATABASE_SSL_KEY"):
        _ = resource("mysql+pymysql://etl@db/etl").engine  # building the engine reads the TLS settings


def test_staging_connection_sends_only_the_rows_the_loader_named():
    conn = StagingConnection(defer_connect=True)
    with pytest.raises(PermanentError, match="asked for the local file '/etc/passwd', which the loader did not"):
        conn.rows_named(b"/etc/passwd")
    rows = [b"1\tann@example.com\n"]
    conn.local_stream = ("etl-rows-1.tsv", rows)
    assert conn.rows_named(b"etl-rows-1.tsv") is rows
    with pytest.raises(PermanentError, match="/root/.ssh/id_rsa"):
        conn.rows_named(b"/root/.ssh/id_rsa")


def test_load_data_local_only_on_the_staging_connection_and_only_for_the_named_file(resource, mariadb_url, tmp_path):
    """A real server asking for a file, as a rogue one would: the main engine does not offer
    LOAD DATA LOCAL at all, the staging engine refuses any file the loader did not name."""
    database = resource(mariadb_url)
    secret = tmp_path / "secret.txt"
    secret.write_text("the-run-can-read-this\n")
    ask_for_it = f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE leaked"
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE leaked (line TEXT)")
    with pytest.raises(sa.exc.OperationalError, match="not allowed"), database.engine.connect() as conn:
        conn.exec_driver_sql(ask_for_it)
    with database.staging_engine.connect() as conn:
        with pytest.raises(PermanentError, match="asked for the local file .*secret.txt.*refused"):
            conn.exec_driver_sql(ask_for_it)
        conn.rollback()
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM leaked").scalar_one() == 0  # and still in step

    report = load_source(database, SAMPLE_CSV, load_column_map(None), RetrySettings(), "run", LOG)
    assert (report.writer, report.contacts_after) == (LoadDataWriter.name, 988)


def test_connections_share_one_tls_context_and_only_staging_ones_offer_local_files(resource, mariadb_url):
    """PyMySQL would build a context, loading the system's CA certificates, for every connection:
    both engines of every resource share one (the server here offers no TLS: PyMySQL's preferred
    mode still builds it)."""
    first, second = resource(mariadb_url), resource(mariadb_url)
    connections = [
        engine.raw_connection() for engine in (first.engine, first.staging_engine, second.engine, second.staging_engine)
    ]
    try:
        contexts = {id(conn.dbapi_connection.ctx) for conn in connections}
        offers_local_files = [bool(conn.dbapi_connection.client_flag & CLIENT.LOCAL_FILES) for conn in connections]
    finally:
        for conn in connections:
            conn.close()
    assert len(contexts) == 1
    assert offers_local_files == [False, True, False, True]


def test_concurrent_loads_take_turns_and_agree(resource, mariadb_url):
    """Two runs at once: GET_LOCK makes the second wait; both converge to the same table."""
    database = resource(mariadb_url)
    spans, reports = [], []

    def run(name: str) -> None:
        with database.exclusive("etl_assets.contacts_table"):
            started = time.monotonic()
            reports.append(
                load_contacts(
                    database.engine,
                    SAMPLE_CSV,
                    load_column_map(None),
                    LoadDataWriter(),
                    name,
                    logging.getLogger(name),
                    RetrySettings(),
                    staging_engine=database.staging_engine,
                )
            )
            time.sleep(0.3)
            spans.append((started, time.monotonic()))

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (first_start, first_end), (second_start, _second_end) = sorted(spans)
    assert second_start >= first_end, "the two loads overlapped"
    assert sorted(report.skipped_identical_source for report in reports) == [False, True]
    with database.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM contacts")).scalar_one() == 988
        assert conn.execute(sa.text("SELECT COUNT(*) FROM etl_loads")).scalar_one() == 1
