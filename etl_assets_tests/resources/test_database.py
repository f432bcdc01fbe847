"""DatabaseResource: masked descriptions, defaults, and the lock that serialises concurrent runs."""

import logging
import threading
import time

import sqlalchemy as sa

from etl_assets.contacts.loader import load_contacts
from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.staging import LoadDataWriter
from etl_assets.resources.database import DatabaseResource, mask_url
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings
from etl_assets_tests.conftest import SAMPLE_CSV


def resource(url: str | None = None) -> DatabaseResource:
    return DatabaseResource(url=url, secrets=SecretsResource())


def test_passwords_are_masked_even_in_urls_sqlalchemy_cannot_parse():
    assert mask_url("mysql+pymysql://etl:p@ss:w0rd@db:3306/etl") == "mysql+pymysql://etl:***@db:3306/etl"
    assert resource("mysql+pymysql://etl:hunter2@db/etl").describe() == "mysql+pymysql://etl:***@db/etl"


def test_password_kept_apart_from_the_url_is_added_at_connect_time(clean_env, monkeypatch):
    monkeypatch.setenv("ETL_DATABASE_PASSWORD", "from-the-secret-store")
    database = resource("mysql+pymysql://etl@db/etl")
    assert database.engine.url.password == "from-the-secret-store"
    assert "from-the-secret-store" not in database.describe() + repr(database.engine)


def test_default_is_sqlite_in_the_data_dir(clean_env, tmp_path):
    database = resource()
    assert database.is_default()
    assert database.describe() == f"sqlite:///{tmp_path / 'etl_data' / 'etl.sqlite'}"


def test_concurrent_loads_take_turns_and_agree(mariadb_url):
    """Two runs at once: GET_LOCK makes the second wait; both converge to the same table."""
    database = resource(mariadb_url)
    spans, reports = [], []

    def run(name: str) -> None:
        with database.exclusive("etl_assets.contacts_table"):
            started = time.monotonic()
            reports.append(load_contacts(database.engine, SAMPLE_CSV, load_column_map(None), LoadDataWriter(), name,
                                         logging.getLogger(name), RetrySettings()))
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
