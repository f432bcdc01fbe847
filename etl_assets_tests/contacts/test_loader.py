"""The staged load on a real MariaDB (both load paths) and on SQLite."""

import datetime as dt
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from etl_assets.contacts import loader, schema
from etl_assets.contacts.loader import LoadRules, ensure_tables, load_contacts
from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.records import SeenEmails, prepare_chunk
from etl_assets.contacts.source import CsvFormat
from etl_assets.contacts.staging import InsertWriter, LoadDataWriter, StagingConnection, choose_writer
from etl_assets.errors import PermanentError
from etl_assets.retrying import RetrySettings
from etl_assets_tests.conftest import REPO, SAMPLE_CSV

COLUMN_MAP = load_column_map(None)
# For tests that replace one data set with another on purpose.
REPLACE_ALL = LoadRules(CsvFormat(), max_delete_fraction=0.1, allow_mass_delete=True)
RETRY = RetrySettings(attempts=4, max_seconds=60, initial_delay=0.1, max_delay=1)
LOG = logging.getLogger("test_loader")


def mysql_engine(url: str) -> sa.Engine:
    """An engine whose connections stream LOAD DATA LOCAL rows, as DatabaseResource.staging_engine's."""
    engine = sa.create_engine(url, pool_pre_ping=True)
    sa.event.listen(
        engine, "do_connect", lambda _dialect, _record, cargs, cparams: StagingConnection(*cargs, **cparams)
    )
    return engine


def generate_csv(path: Path, rows: int, seed: int = 7) -> Path:
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from generate_sample_dataset import write_csv

    write_csv(path, rows, seed)
    return path


def expected_table(csv_path: Path) -> pd.DataFrame:
    """The source's valid, de-duplicated contacts, computed in one pass without the database."""
    raw = pa.Table.from_pandas(pd.read_csv(csv_path, dtype=str, keep_default_na=False), preserve_index=False)
    valid = prepare_chunk(raw, COLUMN_MAP, np.arange(1, raw.num_rows + 1), SeenEmails()).valid.to_pandas()
    return valid.set_index("email").sort_index()


def table_content(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM contacts"), conn, dtype=str)
    return frame.set_index("email").sort_index()


def assert_table_equals_source(engine: sa.Engine, csv_path: Path) -> None:
    expected, actual = expected_table(csv_path), table_content(engine)
    assert len(actual) == len(expected)
    assert list(actual.index) == list(expected.index)
    for name in COLUMN_MAP.field_names + ["content_hash"]:
        if name == "email":
            continue
        left = actual[name].fillna("").astype(str).tolist()
        right = expected[name].fillna("").astype(str).tolist()
        assert left == right, name


@pytest.fixture(params=["mariadb-load-data", "mariadb-insert", "sqlite"])
def target(request, tmp_path):
    """(engine, writer) for each load path."""
    if request.param == "sqlite":
        yield sa.create_engine(f"sqlite:///{tmp_path / 'etl.sqlite'}"), InsertWriter()
        return
    url = request.getfixturevalue("mariadb_url")
    engine = mysql_engine(url)
    yield engine, LoadDataWriter() if request.param == "mariadb-load-data" else InsertWriter()
    engine.dispose()


def test_first_load_rerun_changes_and_deletes(target, tmp_path):
    engine, writer = target
    first = load_contacts(
        engine, SAMPLE_CSV, COLUMN_MAP, writer, "run-1", LOG, RETRY, chunk_rows=300, statement_rows=600
    )
    assert (first.rows_read, first.inserted, first.rejected, first.contacts_after) == (1000, 988, 12, 988)
    assert_table_equals_source(engine, SAMPLE_CSV)
    with engine.connect() as conn:
        rejects = {
            row: (code, reason)
            for row, code, reason in conn.execute(
                sa.text("SELECT source_row, reason_code, reason FROM contacts_rejected")
            ).all()
        }
    assert rejects[50][0] == "invalid_email" and rejects[50][1].startswith("invalid email")
    assert rejects[120] == ("duplicate", "duplicate email, first seen at source row 45")

    again = load_contacts(
        engine, SAMPLE_CSV, COLUMN_MAP, writer, "run-2", LOG, RETRY, chunk_rows=300, statement_rows=600
    )
    assert again.skipped_identical_source and again.unchanged == 988 and again.contacts_after == 988
    with engine.begin() as conn:  # as the loader's own message suggests, to have it recreated
        conn.execute(sa.text("DROP TABLE contacts"))
    anew = load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, writer, "run-2b", LOG, RETRY, chunk_rows=300)
    assert not anew.skipped_identical_source and anew.inserted == 988
    assert_table_equals_source(engine, SAMPLE_CSV)

    changed_csv = tmp_path / "changed.csv"
    frame = pd.read_csv(SAMPLE_CSV, dtype=str, keep_default_na=False)
    frame.loc[0, "City"] = "Ulm"  # row 1 changes
    frame = frame.drop(index=[1, 2])  # rows 2 and 3 disappear
    frame.to_csv(changed_csv, index=False)
    third = load_contacts(
        engine, changed_csv, COLUMN_MAP, writer, "run-3", LOG, RETRY, chunk_rows=300, statement_rows=600
    )
    assert (third.inserted, third.updated, third.deleted, third.contacts_after) == (0, 1, 2, 986)
    assert third.unchanged == 985
    assert_table_equals_source(engine, changed_csv)


def test_a_reject_list_from_before_reason_codes_gets_the_column_and_its_codes(target, tmp_path):
    """A database of the previous version: `contacts_rejected` without `reason_code`."""
    engine, writer = target
    load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, writer, "new", LOG, RETRY)
    query = sa.text("SELECT source_row, reason_code FROM contacts_rejected ORDER BY source_row")
    with engine.begin() as conn:
        written = conn.execute(query).all()
        conn.execute(sa.text("ALTER TABLE contacts_rejected DROP COLUMN reason_code"))
    assert {code for _, code in written} == {"invalid_email", "duplicate", "missing_required"}

    # The same source again: nothing is loaded, the list stays, and its codes are filled in.
    again = load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, writer, "after-upgrade", LOG, RETRY)
    assert again.skipped_identical_source
    with engine.connect() as conn:
        assert conn.execute(query).all() == written
    # Every kind of reason an earlier version wrote has its code.
    reasons = {
        "invalid email: x@": "invalid_email",
        "duplicate email, first seen at source row 4": "duplicate",
        "missing required 'Email'": "missing_required",
        "'Company' longer than 255 characters": "too_long",
        "invalid date in 'Subscription Date': 2021-02-30": "invalid_date",
        "wrong number of fields: 3 where the header has 12": "wrong_field_count",
        "row longer than the 4 MiB cap": "row_too_long",
        "a field longer than the 1 MiB cap": "field_too_long",
        "broken quoting: a quoted value is never closed": "broken_quoting",
        "unparseable row: new-line character seen in unquoted field": "unparseable",
    }
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE contacts_rejected"))
        conn.execute(
            sa.text(
                "CREATE TABLE contacts_rejected (source_row INTEGER PRIMARY KEY, email VARCHAR(1000), "
                "raw_values TEXT NOT NULL, reason VARCHAR(1000) NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO contacts_rejected VALUES (:row, NULL, '{}', :reason)"),
            [{"row": row, "reason": reason} for row, reason in enumerate(reasons, 1)],
        )
    schema.add_reason_codes(engine)
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT reason, reason_code FROM contacts_rejected")).all()) == reasons

    # A changed source rewrites the list, codes and all, into the upgraded table.
    report = load_contacts(engine, sample_without(tmp_path, 3), COLUMN_MAP, writer, "next", LOG, RETRY)
    assert not report.skipped_identical_source
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT reason_code, COUNT(*) FROM contacts_rejected GROUP BY 1")).all()) == {
            "invalid_email": 5,
            "duplicate": 5,
            "missing_required": 2,
        }


def test_bulk_and_insert_paths_store_the_same_content(mariadb_url, tmp_path):
    tricky = tmp_path / "tricky.csv"
    frame = pd.read_csv(SAMPLE_CSV, dtype=str, keep_default_na=False).head(50)
    frame.loc[0, "Company"] = 'Tab\there, back\\slash, \\N, "quotes", and a\nnewline'
    frame.loc[1, "City"] = "Zürich 🚀"
    frame.to_csv(tricky, index=False)
    engine = mysql_engine(mariadb_url)
    load_contacts(engine, tricky, COLUMN_MAP, LoadDataWriter(), "bulk", LOG, RETRY)
    bulk = table_content(engine).drop(columns=["first_loaded_at", "updated_at"])
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM contacts")
        conn.exec_driver_sql("DELETE FROM etl_loads")
    load_contacts(engine, tricky, COLUMN_MAP, InsertWriter(), "insert", LOG, RETRY)
    inserted = table_content(engine).drop(columns=["first_loaded_at", "updated_at"])
    pd.testing.assert_frame_equal(bulk, inserted)
    assert 'Tab\there, back\\slash, \\N, "quotes", and a\nnewline' in set(bulk["company"])
    assert_table_equals_source(engine, tricky)


def test_first_load_swaps_in_a_table_shaped_like_contacts_and_later_loads_extend_it(mariadb_url, tmp_path):
    engine = mysql_engine(mariadb_url)
    load_contacts(
        engine, SAMPLE_CSV, COLUMN_MAP, LoadDataWriter(), "first", LOG, RETRY, chunk_rows=300, statement_rows=600
    )
    expected = schema.contact_tables(COLUMN_MAP).tables[schema.CONTACTS]
    inspector = sa.inspect(engine)
    assert [column["name"] for column in inspector.get_columns("contacts")] == list(expected.columns.keys())
    assert inspector.get_pk_constraint("contacts")["constrained_columns"] == ["id"]
    assert [
        (index["name"], index["column_names"], bool(index["unique"])) for index in inspector.get_indexes("contacts")
    ] == [("ux_contacts_email", ["email"], True)]
    assert not {"contacts_staging", "contacts_retired", "contacts_rejected_retired"} & set(inspector.get_table_names())

    grown = tmp_path / "grown.csv"
    frame = pd.read_csv(SAMPLE_CSV, dtype=str, keep_default_na=False)
    extra = frame.iloc[[0]].assign(Email="new.contact@example.com")
    pd.concat([extra, frame]).to_csv(grown, index=False)  # a new row on top shifts every source row
    report = load_contacts(
        engine, grown, COLUMN_MAP, LoadDataWriter(), "second", LOG, RETRY, chunk_rows=300, statement_rows=600
    )
    assert (report.inserted, report.updated, report.unchanged) == (1, 0, 988)
    with engine.connect() as conn:
        new_id, max_before = conn.execute(
            sa.text(
                "SELECT id, (SELECT MAX(id) FROM contacts WHERE email <> 'new.contact@example.com') FROM contacts "
                "WHERE email = 'new.contact@example.com'"
            )
        ).one()
    assert new_id > max_before  # a new id, not a clash with the rows the first load numbered
    assert_table_equals_source(engine, grown)


def _create_options(engine: sa.Engine, table: str) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT create_options FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = :table"
            ),
            {"table": table},
        ).scalar_one()


def _as_time(value: dt.datetime | str) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def _stamp_defaults(engine: sa.Engine, table: str) -> list[dt.datetime | None]:
    """The timestamps' defaults, read as times whatever the column's fractional precision (a
    DATETIME(6) column, as tables made before schema.DATETIME may be, shows '... 16:30:05.000000')."""
    columns = {column["name"]: column for column in sa.inspect(engine).get_columns(table)}
    defaults = [columns[name]["default"] for name in schema.STAMPS]
    return [_as_time(default.strip("'")) if default else None for default in defaults]


def test_tables_a_first_load_swaps_in_fill_without_automatic_statistics_and_get_them_back(mariadb_url, tmp_path):
    """...and without the load's time as the default of their timestamps, which staging tables have."""
    engine = mysql_engine(mariadb_url)
    metadata = ensure_tables(engine, COLUMN_MAP)
    now = dt.datetime(2026, 12, 3, 16, 30, 5)
    load = loader.LoadContext(engine, metadata, COLUMN_MAP, "run", "0" * 64, now, loader.LoadReport())
    for whole, expected in ((True, "stats_auto_recalc=0"), (False, "")):
        loader._recreate_staging(load, whole=whole, email_index=False)
        options = {name: _create_options(engine, name) for name in ("contacts_staging", "contacts_rejected_staging")}
        assert options == dict.fromkeys(options, expected), whole
        assert _stamp_defaults(engine, "contacts_staging") == [now, now]
    loader._drop_staging(engine, metadata)

    load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, LoadDataWriter(), "first", LOG, RETRY, chunk_rows=300)
    assert (_create_options(engine, "contacts"), _create_options(engine, "contacts_rejected")) == ("", "")
    assert _stamp_defaults(engine, "contacts") == [None, None]
    grown = tmp_path / "grown.csv"
    frame = pd.read_csv(SAMPLE_CSV, dtype=str, keep_default_na=False)
    pd.concat([frame.iloc[[0]].assign(Email="new.contact@example.com"), frame]).to_csv(grown, index=False)
    assert load_contacts(engine, grown, COLUMN_MAP, LoadDataWriter(), "second", LOG, RETRY).inserted == 1
    assert _create_options(engine, "contacts") == ""
    assert _stamp_defaults(engine, "contacts") == [None, None]


def test_contacts_carry_the_time_of_the_load_that_added_and_that_last_changed_them(target, tmp_path):
    engine, writer = target
    first_csv = generate_csv(tmp_path / "first.csv", 500)
    load_contacts(engine, first_csv, COLUMN_MAP, writer, "run-1", LOG, RETRY, chunk_rows=200)
    frame = pd.read_csv(first_csv, dtype=str, keep_default_na=False)
    frame.loc[[10, 20], "City"] = "Tromsø"
    new = frame.iloc[[0]].assign(Email="new.contact@example.com")
    second_csv = tmp_path / "second.csv"
    pd.concat([frame, new], ignore_index=True).to_csv(second_csv, index=False)
    time.sleep(1.1)  # the loads' times are whole seconds
    load_contacts(engine, second_csv, COLUMN_MAP, writer, "run-2", LOG, RETRY, chunk_rows=200)

    with engine.connect() as conn:
        first, second = [row[0] for row in conn.execute(sa.text("SELECT loaded_at FROM etl_loads ORDER BY id"))]
        stamps = conn.execute(
            sa.text("SELECT first_loaded_at, updated_at, COUNT(*) FROM contacts GROUP BY first_loaded_at, updated_at")
        ).all()
    first, second = _as_time(first), _as_time(second)  # SQLite's are text
    assert first < second
    assert sorted((_as_time(a), _as_time(b), n) for a, b, n in stamps) == [
        (first, first, len(expected_table(first_csv)) - 2),
        (first, second, 2),
        (second, second, 1),
    ]


def test_local_infile_off_falls_back_and_says_so(mariadb_url, caplog):
    admin = sa.create_engine(mariadb_url)
    with admin.connect() as conn:
        conn.exec_driver_sql("SET GLOBAL local_infile = 0")
    try:
        with caplog.at_level(logging.WARNING):
            writer = choose_writer(mysql_engine(mariadb_url), LOG)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("SET GLOBAL local_infile = 1")
    assert isinstance(writer, InsertWriter)
    assert "local_infile off" in caplog.text


def test_missing_email_column_fails_naming_it_and_leaves_the_table(mariadb_url, tmp_path):
    engine = mysql_engine(mariadb_url)
    load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, LoadDataWriter(), "ok", LOG, RETRY)
    broken = tmp_path / "no_email.csv"
    pd.read_csv(SAMPLE_CSV, dtype=str).drop(columns=["Email"]).to_csv(broken, index=False)
    with pytest.raises(PermanentError, match=r"lacks the mapped column\(s\) \['Email'\]; columns found: \['Index'"):
        load_contacts(engine, broken, COLUMN_MAP, LoadDataWriter(), "broken", LOG, RETRY)
    assert_table_equals_source(engine, SAMPLE_CSV)


@pytest.mark.parametrize("loaded_before", [True, False], ids=["apply-to-existing", "swap-into-empty"])
def test_killed_connection_mid_load_is_retried_and_readers_never_see_a_partial_table(
    mariadb_url, tmp_path, caplog, loaded_before
):
    engine = mysql_engine(mariadb_url)
    before = 0
    if loaded_before:
        load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, LoadDataWriter(), "before", LOG, RETRY)
        before = len(expected_table(SAMPLE_CSV))
    else:
        ensure_tables(engine, COLUMN_MAP)
    big_csv = generate_csv(tmp_path / "big.csv", 40_000, seed=11)
    after = len(expected_table(big_csv))
    database = sa.make_url(mariadb_url).database
    admin = sa.create_engine(mariadb_url)
    stop, killed, counts = threading.Event(), [], set()

    def killer() -> None:
        with admin.connect() as conn:
            while not stop.is_set() and not killed:
                ids = (
                    conn.exec_driver_sql(
                        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID() "
                        "AND INFO LIKE '%%LOAD DATA%%'",
                        (database,),
                    )
                    .scalars()
                    .all()
                )
                for thread_id in ids:
                    conn.exec_driver_sql(f"KILL {int(thread_id)}")
                    killed.append(thread_id)
                time.sleep(0.002)

    def reader() -> None:
        with admin.connect() as conn:
            while not stop.is_set():
                counts.add(conn.exec_driver_sql("SELECT COUNT(*) FROM contacts").scalar_one())
                conn.commit()  # end the snapshot so the next count sees newly committed data

    threads = [threading.Thread(target=killer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    try:
        with caplog.at_level(logging.WARNING):
            report = load_contacts(
                engine,
                big_csv,
                COLUMN_MAP,
                LoadDataWriter(),
                "during",
                LOG,
                RETRY,
                chunk_rows=2_000,
                statement_rows=2_000,
                rules=REPLACE_ALL,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert killed, "the test never caught a LOAD DATA to kill"
    assert "retrying" in caplog.text
    assert report.contacts_after == after
    assert (report.rows_read, report.rejected) == (40_000, 40_000 - after)  # a retry counts from the start
    assert counts <= {before, after}, f"a reader saw a partial table: {sorted(counts)}"
    assert_table_equals_source(engine, big_csv)


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def counts(engine: sa.Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            for table in ("contacts", "etl_loads", "contacts_rejected")
        )


def sample_without(tmp_path: Path, rows: int) -> Path:
    """The sample with its first `rows` data rows gone."""
    path = tmp_path / f"without_{rows}.csv"
    lines = SAMPLE_CSV.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "".join(lines[1 + rows :]))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("HEADER\n", "has no data rows; nothing was changed"),
        ("HEADER\n\n\n", "has no data rows; nothing was changed"),
        (
            "HEADER\n1,A,Ann,B,C,D,E,F,G,not-an-email,2021-01-01,x\n1,2,3\n",
            r"all 2 rows of bad.csv were rejected \((invalid_email|wrong_field_count) \(1\), "
            r"(invalid_email|wrong_field_count) \(1\)\); nothing was changed",
        ),
    ],
)
def test_a_file_without_valid_rows_fails_and_changes_nothing(target, tmp_path, content, message):
    engine, writer = target
    load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, writer, "ok", LOG, RETRY)
    before = counts(engine)
    bad = tmp_path / "bad.csv"
    bad.write_text(content.replace("HEADER", SAMPLE_CSV.read_text().splitlines()[0]))
    with pytest.raises(PermanentError, match=message):
        load_contacts(engine, bad, COLUMN_MAP, writer, "bad", LOG, RETRY)
    assert counts(engine) == before == (988, 1, 12)
    assert not {"contacts_staging", "contacts_rejected_staging"} & tables(engine)


def test_a_load_deleting_more_than_the_allowed_share_is_refused_until_allowed(target, tmp_path):
    engine, writer = target
    load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, writer, "full", LOG, RETRY)
    half = sample_without(tmp_path, 500)
    gone = len(set(expected_table(SAMPLE_CSV).index) - set(expected_table(half).index))
    with pytest.raises(PermanentError) as refused:
        load_contacts(engine, half, COLUMN_MAP, writer, "half", LOG, RETRY)
    message = str(refused.value)
    assert f"would delete {gone} of the 988 contacts (50%), more than ETL_MAX_DELETE_FRACTION=0.1" in message
    assert "ETL_ALLOW_MASS_DELETE=true" in message
    assert counts(engine) == (988, 1, 12)
    assert not {"contacts_staging", "contacts_rejected_staging"} & tables(engine)

    report = load_contacts(engine, half, COLUMN_MAP, writer, "purge", LOG, RETRY, rules=REPLACE_ALL)
    assert (report.deleted, report.contacts_after) == (gone, 988 - gone)
    with engine.connect() as conn:
        removed = {
            email: (json.loads(contact), run)
            for email, contact, run in conn.execute(
                sa.text("SELECT email, contact, removed_by_run FROM contacts_removed")
            )
        }
    assert len(removed) == gone and {run for _, run in removed.values()} == {"purge"}
    first, _ = removed["radia.liskov.1@example.com"]
    assert first["source_row"] == 1 and first["company"] == "Stark Industries"
    assert str(first["subscription_date"]).startswith("2020-03-15")


def test_a_small_deletion_goes_through_and_keeps_what_it_removed(target, tmp_path):
    engine, writer = target
    load_contacts(engine, SAMPLE_CSV, COLUMN_MAP, writer, "full", LOG, RETRY)
    report = load_contacts(engine, sample_without(tmp_path, 3), COLUMN_MAP, writer, "trim", LOG, RETRY)
    assert (report.deleted, report.contacts_after) == (3, 985)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT COUNT(*) FROM contacts_removed WHERE removed_by_run = 'trim'")).scalar_one()
            == 3
        )
    assert not {"contacts_staging", "contacts_rejected_staging"} & tables(engine)


def test_a_huge_value_is_rejected_with_its_raw_values_cut_and_the_rest_loads(mariadb_url, tmp_path):
    engine = mysql_engine(mariadb_url)
    lines = SAMPLE_CSV.read_text().splitlines()
    fields = lines[1].split(",")
    fields[4] = "x" * 1_000_000
    path = tmp_path / "huge.csv"
    path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    report = load_contacts(engine, path, COLUMN_MAP, LoadDataWriter(), "huge", LOG, RETRY)
    assert (report.rows_read, report.rejected, report.contacts_after) == (1000, 13, 987)
    with engine.connect() as conn:
        reason, raw = conn.execute(
            sa.text("SELECT reason, raw_values FROM contacts_rejected WHERE source_row = 1")
        ).one()
    assert reason == "'Company' longer than 255 characters"
    assert len(raw) < 20_000 and json.loads(raw)["Company"].endswith("…")


@pytest.mark.parametrize("slice_contacts", [loader.APPLY_SLICE_CONTACTS, 250], ids=["one-slice", "twelve-slices"])
def test_a_new_version_stages_only_new_and_changed_rows_and_writes_exactly_those(
    target, tmp_path, monkeypatch, slice_contacts
):
    """10% changed, 1% new, 1% removed, one contact now rejected: only those rows are written, whether
    the difference is applied in one slice of ids or in many."""
    monkeypatch.setattr(loader, "APPLY_SLICE_CONTACTS", slice_contacts)
    engine, writer = target
    first_csv = generate_csv(tmp_path / "first.csv", 3000)
    first = load_contacts(engine, first_csv, COLUMN_MAP, writer, "run-1", LOG, RETRY, chunk_rows=700)
    before = table_content(engine)

    frame = pd.read_csv(first_csv, dtype=str, keep_default_na=False)
    rows_of_contacts = sorted(int(row) - 1 for row in before["source_row"])  # each contact's own row
    # Spread over the ids up to the last slice: every ninth contact changed, every 99th removed
    # (none of them changed), one more now rejected.
    changed, removed = rows_of_contacts[1::9][:300], rows_of_contacts[3::99][:30]
    newly_rejected = rows_of_contacts[500]
    frame.loc[changed, "City"] = frame.loc[changed, "City"] + " Nord"
    frame.loc[newly_rejected, "Email"] = "not-an-email"
    new_rows = frame.iloc[:30].copy()
    new_rows["Email"] = [f"new{i}@example.org" for i in range(30)]
    frame = pd.concat([frame.drop(index=removed), new_rows], ignore_index=True)
    second_csv = tmp_path / "second.csv"
    frame.to_csv(second_csv, index=False)

    second = load_contacts(engine, second_csv, COLUMN_MAP, writer, "run-2", LOG, RETRY, chunk_rows=700)
    assert (second.inserted, second.updated, second.deleted) == (30, 300, 31)
    assert second.staged == 330 and second.not_staged == first.contacts_after - 300 - 31
    assert second.unchanged == second.not_staged and second.contacts_after == first.contacts_after - 1
    assert_table_equals_source(engine, second_csv)
    after = table_content(engine)
    kept = before.index.intersection(after.index)
    untouched = [email for email in kept if before.loc[email, "content_hash"] == after.loc[email, "content_hash"]]
    assert len(untouched) == second.unchanged
    assert (after.loc[untouched, ["id", "updated_at"]] == before.loc[untouched, ["id", "updated_at"]]).all().all()
    with engine.connect() as conn:
        removed_emails = {row[0] for row in conn.execute(sa.text("SELECT email FROM contacts_removed"))}
    assert removed_emails == set(before.index) - set(after.index) and len(removed_emails) == 31


@pytest.mark.parametrize("dialect", ["mariadb", "sqlite"])
@pytest.mark.parametrize("compared", [True, False], ids=["compared", "all-new"])
def test_the_insert_of_new_rows_skips_emails_contacts_already_holds(dialect, compared, request, tmp_path):
    """A retry after a commit whose answer was lost finds the new rows inserted: nothing twice. In a
    compared load only rows with a negative id are new; a positive id is a changed contact."""
    url = request.getfixturevalue("mariadb_url") if dialect == "mariadb" else f"sqlite:///{tmp_path / 'i.sqlite'}"
    engine = sa.create_engine(url)
    metadata = ensure_tables(engine, COLUMN_MAP)
    metadata.create_all(engine, tables=[metadata.tables[schema.CONTACTS_STAGING]])

    def row(contact_id: int, email: str) -> dict:
        return {"id": contact_id, "source_row": abs(contact_id), "email": email, "content_hash": "0" * 32,
                "first_loaded_at": "2026-01-01", "updated_at": "2026-01-01"}  # fmt: skip

    insert = "INSERT INTO {} (id, source_row, email, content_hash, first_loaded_at, updated_at) VALUES " + (
        "(:id, :source_row, :email, :content_hash, :first_loaded_at, :updated_at)"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(insert.format(schema.CONTACTS)), [row(5, "held@x.org")])
        staged = [row(-1, "held@x.org"), row(-2, "new@x.org"), row(7, "changed@x.org")]
        conn.execute(sa.text(insert.format(schema.CONTACTS_STAGING)), staged)
    statement = sa.text(loader._insert_new_sql(engine.dialect.name, COLUMN_MAP, compared))
    with engine.begin() as conn:
        assert conn.execute(statement).rowcount == (1 if compared else 2)
    with engine.begin() as conn:
        assert conn.execute(statement).rowcount == 0
        emails = sorted(conn.execute(sa.text("SELECT email FROM contacts")).scalars())
    assert emails == sorted(["held@x.org", "new@x.org"] + ([] if compared else ["changed@x.org"]))
    engine.dispose()
