"""The staging writers on a real MariaDB: rows streamed as one LOAD DATA statement, and what the
server's sorted build of an empty table still refuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pyarrow as pa
import pymysql
import pytest
import sqlalchemy as sa

from etl_assets.contacts.staging import EncodedRows, LoadDataWriter, sorted_bulk_build
from etl_assets.errors import TRANSIENT, classify, mysql_error_code
from etl_assets_tests.contacts.test_loader import mysql_engine

WRITER = LoadDataWriter()


@pytest.mark.parametrize(
    ("name", "mariadb", "version", "expected"),
    [
        ("mysql", True, (10, 11, 19), True),
        ("mysql", True, (10, 11, 11), True),
        ("mysql", True, (10, 11, 10), False),  # MDEV-34703: LOAD DATA could abort in its bulk insert
        ("mysql", True, (10, 6, 20), False),
        ("mysql", True, (11, 4, 5), True),
        ("mysql", True, (11, 4, 4), False),
        ("mysql", True, (11, 5, 2), False),
        ("mysql", True, (11, 8, 1), True),
        ("mysql", False, (8, 4, 3), False),  # MySQL: unique_checks=0 would let the change buffer skip the check
        ("sqlite", False, (3, 45, 0), False),
    ],
)
def test_the_sorted_build_is_used_only_where_the_server_has_it_fixed(name, mariadb, version, expected):
    dialect = SimpleNamespace(name=name, is_mariadb=mariadb, server_version_info=version)
    assert sorted_bulk_build(dialect) is expected  # type: ignore[arg-type]


@pytest.fixture
def engine(mariadb_url):
    engine = mysql_engine(mariadb_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS staged")
        conn.exec_driver_sql(
            "CREATE TABLE staged (id INT PRIMARY KEY, email VARCHAR(254) NOT NULL, UNIQUE KEY ux_email (email)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS staged")
    engine.dispose()


def parts(*batches: list[tuple[int, str]]) -> Iterator[EncodedRows]:
    for batch in batches:
        yield WRITER.encode(pa.table({"id": [row[0] for row in batch], "email": [row[1] for row in batch]}))


def staged(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql("SELECT id, email FROM staged ORDER BY id")]


def test_every_part_travels_in_one_statement(engine):
    assert sorted_bulk_build(engine.dialect)  # this server builds the table by sorting: the path under test
    batches = [[(i * 1000 + j, f"c{i}-{j}@example.com") for j in range(1000)] for i in range(5)]
    with engine.begin() as conn:
        before = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_load'").one()[1]
        WRITER.write(conn, "staged", parts(*batches))
        after = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_load'").one()[1]
        checks = conn.exec_driver_sql("SELECT @@unique_checks, @@foreign_key_checks").one()
    assert int(after) - int(before) == 1
    assert tuple(checks) == (1, 1)  # turned off for that statement only
    assert staged(engine) == sorted(row for batch in batches for row in batch)


def test_a_duplicate_email_still_fails_the_sorted_build_and_nothing_stays(engine):
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        WRITER.write(conn, "staged", parts([(1, "ann@example.com")], [(2, "bob@example.com"), (3, "ann@example.com")]))
    assert staged(engine) == []


def test_a_failure_while_preparing_rows_rolls_back_and_leaves_the_connection_in_step(engine):
    def failing() -> Iterator[EncodedRows]:
        yield from parts([(1, "ann@example.com")])
        raise OSError("the source file went away")

    with engine.connect() as conn:
        with pytest.raises(OSError, match="the source file went away"):
            WRITER.write(conn, "staged", failing())
        conn.rollback()
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM staged").scalar_one() == 0
        WRITER.write(conn, "staged", parts([(2, "bob@example.com")]))  # the same session, still usable
        conn.commit()
    assert staged(engine) == [(2, "bob@example.com")]


def test_a_connection_killed_mid_stream_fails_at_once_as_a_lost_connection(engine, mariadb_url):
    admin = sa.create_engine(mariadb_url)

    def killed_midway(session_id: int) -> Iterator[EncodedRows]:
        for i in range(400):  # 2M rows: far more than the socket buffers hold
            if i == 20:  # while the server is reading them
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"KILL {session_id}")
            yield from parts([(i * 5000 + j, f"c{i}-{j}@example.com") for j in range(5000)])

    started = time.monotonic()
    with pytest.raises(sa.exc.DBAPIError) as raised, engine.begin() as conn:
        WRITER.write(conn, "staged", killed_midway(conn.connection.dbapi_connection.thread_id()))
    # A killed session stops reading but keeps its socket a while: a blocking send waited 108 s.
    assert time.monotonic() - started < 30
    admin.dispose()
    # The lost connection itself, not what a write or rollback on a closed socket would raise after it.
    assert isinstance(raised.value.orig, pymysql.err.OperationalError)
    assert mysql_error_code(raised.value) in (1927, 2006, 2013)
    assert raised.value.connection_invalidated and classify(raised.value) == TRANSIENT
    assert staged(engine) == []  # and the pool hands out a fresh connection


def test_nothing_to_write_sends_no_statement(engine):
    with engine.begin() as conn:
        before = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_load'").one()[1]
        WRITER.write(conn, "staged", iter([]))
        assert conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_load'").one()[1] == before
