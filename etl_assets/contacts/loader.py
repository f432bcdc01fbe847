"""Loading a contacts CSV into the database: staged, then applied in one step.

Readers of `contacts` see the previous load or the new one, never a half-written table: the
rows land in `contacts_staging` first, streamed as one statement while the next chunk is
prepared, then a single transaction applies the difference (delete gone and update changed
contacts, one slice of ids at a time; insert new ones, replace the reject list, log the load).
When `contacts` holds rows, each row is compared with them before staging (contacts/known.py):
only new and changed rows are staged, and the emails no row met are staged as the contacts to
delete. On MySQL a first load, into an empty `contacts`, swaps the staged table in with one
atomic RENAME instead of copying it (on MariaDB the server builds that table and its email index
once, by sorting). A crash at any point leaves `contacts` as it was; a re-run converges to the
same result.

Before anything is applied, two guards: a load with no valid row fails, and a load that would
delete more than ETL_MAX_DELETE_FRACTION of `contacts` refuses unless ETL_ALLOW_MASS_DELETE is
set. Whatever a load deletes is first copied to `contacts_removed`. The staging tables are
dropped when the load ends, whether it succeeded or failed.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from etl_assets import settings
from etl_assets.contacts import schema
from etl_assets.contacts.known import KnownContacts, read_known
from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import CODE_COLUMN, HASH_COLUMN, REASON_COLUMN, ROW_COLUMN, SeenEmails, prepare_chunk
from etl_assets.contacts.source import CsvFormat, FileScan, read_chunks, scan_file
from etl_assets.contacts.staging import EncodedRows, StagingWriter
from etl_assets.errors import PermanentError
from etl_assets.progress import Progress
from etl_assets.retrying import RetrySettings, call_with_retries
from etl_assets.streams import prefetched

# Rows prepared at a time: bigger chunks are no faster and cost ~3 KB of peak memory a row (at 2M
# rows, 10,000 a chunk peaked 25 MB higher than 5,000, in the same time).
DEFAULT_CHUNK_ROWS = 5_000
# Rejected rows gathered into one statement: they are written beside the contacts' stream, on a
# second connection, and one statement per chunk would cost a commit per chunk.
STATEMENT_ROWS = 50_000
REJECTED_SCHEMA = pa.schema(
    [
        (ROW_COLUMN, pa.int64()),
        (EMAIL_FIELD, pa.string()),
        ("raw_values", pa.string()),
        (REASON_COLUMN, pa.string()),
        (CODE_COLUMN, pa.string()),
    ]
)


@dataclass(frozen=True)
class LoadRules:
    """How to read the source file and how much of `contacts` one load may delete."""

    csv: CsvFormat
    max_delete_fraction: float
    allow_mass_delete: bool

    @classmethod
    def from_settings(cls) -> LoadRules:
        fraction = settings.float_setting(settings.MAX_DELETE_FRACTION)
        if not 0 <= fraction <= 1:
            raise PermanentError(f"{settings.MAX_DELETE_FRACTION} must be between 0 and 1, got {fraction}")
        return cls(CsvFormat.from_settings(), fraction, settings.bool_setting(settings.ALLOW_MASS_DELETE))


@dataclass
class LoadReport:
    rows_read: int = 0
    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    not_staged: int = 0  # valid rows identical to their contact, left out of staging
    contacts_after: int = 0
    skipped_identical_source: bool = False
    writer: str = ""
    applied_by: str = ""  # how the staged rows reached `contacts`
    apply_seconds: float = 0.0  # of `seconds`: the database applying the staged rows (or swapping them in)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoadContext:
    """What every stage of one load works with: where, which map, which run, which file, when."""

    engine: sa.Engine
    metadata: sa.MetaData  # the contacts tables, from the column map
    column_map: ColumnMap
    run_id: str
    source_sha256: str
    now: dt.datetime  # every row this load writes carries this time
    report: LoadReport


@dataclass
class StagedChunk:
    first_row: int
    rows_read: int
    valid_rows: int  # staged or identical to their contact
    contacts: EncodedRows
    rejected: EncodedRows


def staged_chunks(
    csv_path: Path,
    column_map: ColumnMap,
    writer: StagingWriter,
    chunk_rows: int,
    fmt: CsvFormat,
    scan: FileScan,
    reasons: collections.Counter,
    known: KnownContacts | None = None,
) -> Iterator[StagedChunk]:
    """The CSV as rows ready for the staging tables: prepared and encoded, without the rows
    identical to a `known` contact (nor their timestamps: the staging tables' defaults). Counts the
    rejects by code in `reasons`."""
    seen, first_row = SeenEmails(), 1
    for raw in read_chunks(csv_path, column_map, chunk_rows, fmt, scan):
        chunk = prepare_chunk(raw.table, column_map, raw.rows, seen)
        valid, ids = chunk.valid, chunk.valid.column(ROW_COLUMN)
        if known is not None:
            # A changed row carries its contact's id, to be applied in id order; a new one its
            # row number negated, an id no contact has.
            comparison = known.compare(valid.column(EMAIL_FIELD), valid.column(HASH_COLUMN), chunk.email_keys)
            valid = valid.filter(comparison.differs)
            changed_ids = comparison.ids[comparison.differs]
            ids = pa.array(np.where(changed_ids > 0, changed_ids, -valid.column(ROW_COLUMN).to_numpy()))
        contacts = valid.add_column(0, "id", ids)
        refused = raw.rejected + chunk.rejected
        reasons.update(item[CODE_COLUMN] for item in refused)
        rejected = pa.Table.from_pylist(refused, schema=REJECTED_SCHEMA)
        encoded_rows = writer.encode(contacts), writer.encode(rejected)
        yield StagedChunk(first_row, raw.records, chunk.valid.num_rows, *encoded_rows)
        first_row += raw.records


def ensure_tables(engine: sa.Engine, column_map: ColumnMap) -> sa.MetaData:
    """The contacts tables, created where missing; fails when `contacts` lacks a mapped column."""
    metadata = schema.create_tables(engine, column_map)
    existing = {column["name"] for column in sa.inspect(engine).get_columns(schema.CONTACTS)}
    missing = [name for name in metadata.tables[schema.CONTACTS].columns.keys() if name not in existing]
    if missing:
        raise PermanentError(
            f"table {schema.CONTACTS} lacks column(s) {missing} that the column map "
            f"({column_map.origin}) needs; add them or drop the table to have it recreated"
        )
    return metadata


def _staging_tables(metadata: sa.MetaData) -> list[sa.Table]:
    names = (schema.CONTACTS_STAGING, schema.REJECTED_STAGING, schema.GONE_STAGING)
    return [metadata.tables[name] for name in names]


# The staged tables a first load swaps in. While such a table fills from empty, MariaDB 10.11's
# statistics task takes it up again and again until ten seconds have passed since its last count,
# burning a core the load's own preparation needs (perf, gdb: a timer task in metadata-lock lookups).
# 2M rows, six interleaved pairs: 28-36 s of server CPU against 19-23 s without; the step faster in
# five, by 1.2-6.6 s (medians 26.5 s against 23.4 s).
# So they count nothing while they fill, and get the server's default back before the swap. A next
# version's staging keeps the default: without it the next version was slower in 11 runs of 11
# (by 0.4-2.6 s; why, not found).
_SWAPPED_IN = (schema.CONTACTS_STAGING, schema.REJECTED_STAGING)


def _count_statistics(conn: sa.Connection, automatically: bool) -> None:
    """Whether the server keeps the statistics of the staged tables to swap in counted (MySQL)."""
    for table in _SWAPPED_IN:
        conn.exec_driver_sql(f"ALTER TABLE {table} STATS_AUTO_RECALC={'DEFAULT' if automatically else 0}")


def _recreate_staging(load: LoadContext, whole: bool, email_index: bool) -> None:
    """Empty staging tables for `load`, their timestamps defaulting to its time."""
    engine = load.engine
    load.metadata.drop_all(engine, tables=_staging_tables(load.metadata))
    for table in schema.staging_tables(load.column_map, load.now):
        table.create(engine)
    with engine.begin() as conn:
        if whole and engine.dialect.name == "mysql":
            _count_statistics(conn, automatically=False)
        if email_index:
            conn.execute(schema.staging_email_index(engine.dialect.name))


def _drop_staging(engine: sa.Engine, metadata: sa.MetaData) -> None:
    # Best effort: after a lost connection this fails too, and the next load recreates them.
    with contextlib.suppress(sa.exc.DBAPIError):
        metadata.drop_all(engine, tables=_staging_tables(metadata))


def _known_contacts(engine: sa.Engine) -> KnownContacts | None:
    """What `contacts` holds, to stage only what differs; None when it is empty (a first load)."""
    with engine.connect() as conn:
        if conn.execute(sa.text(f"SELECT 1 FROM {schema.CONTACTS} LIMIT 1")).first() is None:
            return None
    return read_known(engine)


def _stage_source(
    load: LoadContext,
    writer: StagingWriter,
    staging_engine: sa.Engine,
    chunks: Callable[[], Iterator[StagedChunk]],
    statement_rows: int,
    progress: Progress,
    whole: bool,
) -> int:
    """Stage the source into fresh staging tables; returns its valid rows. `whole`: every valid row
    is staged (a first load), so the staged table may be swapped in and gets the email index.

    The contacts go as one statement, so in one transaction: the server takes them while the next
    chunk is prepared, and on MariaDB builds a whole staged table and its email index once, at the
    commit.
    The rejects go beside them on a second connection, `statement_rows` at a time. A failure
    anywhere rolls the contacts back, and a retry starts over from the first row.
    """
    report = load.report
    report.rows_read = report.rejected = report.not_staged = 0
    valid = 0
    rejects: list[EncodedRows] = []
    _recreate_staging(load, whole, whole and writer.indexes_while_loading(load.engine.dialect))
    with (
        contextlib.ExitStack() as stack,
        staging_engine.begin() as conn,
        ThreadPoolExecutor(1, thread_name_prefix="rejects") as beside_thread,
    ):
        # A streaming statement holds its connection until the last row: the rejects need another,
        # and a thread of their own, so the last ones are written while the server ends the stream.
        beside_conn = stack.enter_context(staging_engine.begin()) if writer.streams else conn
        written: Future | None = None

        def write_rejects() -> None:
            nonlocal written
            parts = rejects.copy()
            rejects.clear()
            if not writer.streams:  # the same connection, between two of its statements
                writer.write(beside_conn, schema.REJECTED_STAGING, parts)
                return
            if written is not None:
                written.result()  # one write at a time; a failed one stops the stream
            written = beside_thread.submit(writer.write, beside_conn, schema.REJECTED_STAGING, parts)

        def contacts() -> Iterator[EncodedRows]:
            nonlocal valid
            for chunk in prefetched(chunks()):
                yield chunk.contacts
                report.rows_read += chunk.rows_read
                report.rejected += chunk.rejected.count
                report.not_staged += chunk.valid_rows - chunk.contacts.count
                valid += chunk.valid_rows
                if chunk.rejected.count:
                    rejects.append(chunk.rejected)
                if sum(part.count for part in rejects) >= statement_rows:
                    write_rejects()
                progress.add(chunk.rows_read)
            write_rejects()

        writer.write(conn, schema.CONTACTS_STAGING, contacts())
        if written is not None:
            written.result()
    return valid


def _stage_gone(engine: sa.Engine, writer: StagingWriter, gone: EncodedRows) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {schema.GONE_STAGING}"))  # a retry starts over
        writer.write(conn, schema.GONE_STAGING, [gone])


def _index_staging(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if not sa.inspect(conn).get_indexes(schema.CONTACTS_STAGING):  # a retry may find it built
            conn.execute(schema.staging_email_index(engine.dialect.name))


@dataclass(frozen=True)
class LastLoad:
    """The last applied load, and how many contacts `contacts` holds now."""

    row: dict | None
    contacts: int

    @classmethod
    def read(cls, engine: sa.Engine, metadata: sa.MetaData) -> LastLoad:
        loads = metadata.tables[schema.LOADS]
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(schema.LOADS):  # a first load creates it meanwhile
                return cls(None, 0)
            last = conn.execute(sa.select(loads).order_by(loads.c.id.desc()).limit(1)).mappings().first()
            if last is None or not inspector.has_table(schema.CONTACTS):  # dropped to be loaded anew
                return cls(dict(last) if last else None, 0)
            count = conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[schema.CONTACTS])).scalar_one()
        return cls(dict(last), int(count))

    def identical(self, sha: str, fingerprint: str) -> dict | None:
        """The last load when it read this very file with this map and `contacts` still holds its rows."""
        last = self.row
        if not last or last["source_sha256"] != sha or last["mapping_fingerprint"] != fingerprint:
            return None
        return last if self.contacts == last["contacts_after"] else None


# The contacts a load removes: those whose email no valid row of the source met.
_GONE = f"FROM {schema.GONE_STAGING} g JOIN {schema.CONTACTS} c ON c.id = g.id AND c.{EMAIL_FIELD} = g.{EMAIL_FIELD}"
# The difference is applied a slice of contact ids at a time (KnownContacts.id_slices), all of a
# slice's changes together: its pages of `contacts` are read and written once, not once a statement.
# Measured on 1M contacts, 10% changed, 1% gone, 128 MB buffer pool (keep, delete, update): 11.7 s
# in one slice, 7.2-7.3 s in slices of 100,000 contacts, 6.8-7.5 s of 50,000, 6.6 s of 25,000.
APPLY_SLICE_CONTACTS = 50_000


def _in_slice(alias: str) -> str:
    return f"{alias}.id >= :low AND {alias}.id < :high"


def _quoted(dialect: str, names: list[str]) -> list[str]:
    return [f"`{name}`" if dialect == "mysql" else f'"{name}"' for name in names]


def _update_changed_sql(dialect: str, column_map: ColumnMap) -> str:
    """Contacts of an id slice whose staged row differs take its values. Joined on the id the row
    carries, so the server walks `contacts` in key order; not an upsert, which on MySQL costs a failed
    insert and a burnt auto-increment id per changed row. The email must match too: an id alone
    decides nothing."""
    names = [name for name in column_map.field_names if name != EMAIL_FIELD] + [HASH_COLUMN, ROW_COLUMN, "updated_at"]
    contacts, staging = schema.CONTACTS, schema.CONTACTS_STAGING
    condition = f"s.{EMAIL_FIELD} = c.{EMAIL_FIELD} AND c.{HASH_COLUMN} <> s.{HASH_COLUMN} AND {_in_slice('s')}"
    if dialect == "mysql":
        assignments = ", ".join(f"c.{name} = s.{name}" for name in _quoted(dialect, names))
        return f"UPDATE {contacts} c JOIN {staging} s ON s.id = c.id SET {assignments} WHERE {condition}"
    assignments = ", ".join(f"{name} = s.{name}" for name in _quoted(dialect, names))
    return f"UPDATE {contacts} AS c SET {assignments} FROM {staging} s WHERE s.id = c.id AND {condition}"


def _insert_new_sql(dialect: str, column_map: ColumnMap, compared: bool) -> str:
    """The staged rows of emails `contacts` lacks join it. When the rows were `compared` with it,
    only those with a negative id (staged_chunks) are looked up: 10,000 lookups, not 110,000, in a
    new version with 10% changed and 1% new. Looked up still, so that a retry after a commit whose
    answer was lost, or a contact added by hand meanwhile, inserts nothing twice."""
    names = _quoted(dialect, column_map.field_names + [HASH_COLUMN, ROW_COLUMN, "first_loaded_at", "updated_at"])
    new_rows = "s.id < 0 AND " if compared else ""
    return (
        f"INSERT INTO {schema.CONTACTS} ({', '.join(names)}) SELECT {', '.join(f's.{name}' for name in names)} "
        f"FROM {schema.CONTACTS_STAGING} s LEFT JOIN {schema.CONTACTS} c ON c.{EMAIL_FIELD} = s.{EMAIL_FIELD} "
        # In email order, the unique email index fills in order instead of splitting pages at random.
        f"WHERE {new_rows}c.{EMAIL_FIELD} IS NULL ORDER BY s.{EMAIL_FIELD}"
    )


def _delete_gone_sql(dialect: str) -> str:
    gone = schema.GONE_STAGING
    if dialect == "mysql":  # joined: a single-table DELETE ... IN (subquery) scans all of contacts there
        return f"DELETE c {_GONE} WHERE {_in_slice('g')}"
    return (
        f"DELETE FROM {schema.CONTACTS} WHERE (id, {EMAIL_FIELD}) IN "
        f"(SELECT id, {EMAIL_FIELD} FROM {gone} g WHERE {_in_slice('g')})"
    )


def _count(conn: sa.Connection, table: str) -> int:
    return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def _check_deletions(rules: LoadRules, known: KnownContacts) -> None:
    """Refuse, before `contacts` is touched, a load that would delete too large a share of it."""
    before, gone = len(known), known.gone_count
    if before and gone > rules.max_delete_fraction * before and not rules.allow_mass_delete:
        raise PermanentError(
            f"this load would delete {gone:,} of the {before:,} contacts ({gone / before:.0%}), more than "
            f"{settings.MAX_DELETE_FRACTION}={rules.max_delete_fraction:g} allows; nothing was changed. If the "
            f"source really lost them, run once with {settings.ALLOW_MASS_DELETE}=true (what a load deletes "
            f"is kept in {schema.REMOVED})"
        )


def _keep_removed(conn: sa.Connection, load: LoadContext, id_slice: dict[str, int]) -> None:
    """Copy the contacts this load deletes from `id_slice` to `contacts_removed`, their values as one
    JSON object."""
    names = [ROW_COLUMN, *load.column_map.field_names, "first_loaded_at", "updated_at"]
    values = ", ".join(f"'{name}', c.{name}" for name in names)
    conn.execute(
        sa.text(  # JSON_OBJECT: MySQL's and SQLite's alike
            f"INSERT INTO {schema.REMOVED} (contact_id, {EMAIL_FIELD}, {HASH_COLUMN}, contact, removed_by_run, "
            f"removed_at) SELECT c.id, c.{EMAIL_FIELD}, c.{HASH_COLUMN}, JSON_OBJECT({values}), :run_id, :now "
            f"{_GONE} WHERE {_in_slice('g')}"
        ),
        {"run_id": load.run_id, "now": load.now, **id_slice},
    )


def _record_load(conn: sa.Connection, load: LoadContext) -> None:
    report = load.report
    conn.execute(
        sa.insert(load.metadata.tables[schema.LOADS]).values(
            run_id=load.run_id,
            source_sha256=load.source_sha256,
            mapping_fingerprint=load.column_map.fingerprint(),
            rows_read=report.rows_read,
            inserted=report.inserted,
            updated=report.updated,
            unchanged=report.unchanged,
            deleted=report.deleted,
            rejected=report.rejected,
            contacts_after=report.contacts_after,
            loaded_at=load.now,
        )
    )


# The reject list is replaced whole; columns by name, so a table that gained its code column
# later (schema.add_reason_codes) takes the rows alike.
_REJECTED_COLUMNS = ", ".join(REJECTED_SCHEMA.names)


def _apply(load: LoadContext, known: KnownContacts | None) -> None:
    """Make `contacts` equal the source, in one transaction: the staged rows differ from what is
    `known` of it (all are new without it), the gone emails left it."""
    report = load.report
    report.applied_by = "the difference (delete, update, insert), one transaction"
    dialect = load.engine.dialect.name
    update = sa.text(_update_changed_sql(dialect, load.column_map))
    delete = sa.text(_delete_gone_sql(dialect))
    with load.engine.begin() as conn:
        # Under the load lock only loads write `contacts`: what is known is what it holds.
        before = len(known) if known is not None else _count(conn, schema.CONTACTS)
        report.staged = _count(conn, schema.CONTACTS_STAGING)
        report.deleted = report.updated = 0
        gone = known.gone_count if known is not None else 0
        for id_slice in known.id_slices(APPLY_SLICE_CONTACTS) if known is not None else []:
            if gone:
                _keep_removed(conn, load, id_slice)
                report.deleted += conn.execute(delete, id_slice).rowcount
            report.updated += conn.execute(update, id_slice).rowcount
        insert = _insert_new_sql(dialect, load.column_map, compared=known is not None)
        report.inserted = conn.execute(sa.text(insert)).rowcount
        report.unchanged = report.not_staged + report.staged - report.inserted - report.updated
        # Counted, not re-read: COUNT(*) after a big change in the same transaction walks the undo log.
        report.contacts_after = before - report.deleted + report.inserted
        conn.execute(sa.text(f"DELETE FROM {schema.REJECTED}"))
        conn.execute(
            sa.text(
                f"INSERT INTO {schema.REJECTED} ({_REJECTED_COLUMNS}) "
                f"SELECT {_REJECTED_COLUMNS} FROM {schema.REJECTED_STAGING}"
            )
        )
        _record_load(conn, load)


def _swap_in(load: LoadContext, staged: bool) -> None:
    """The staged tables become `contacts` (empty) and its reject list: one write instead of two.

    RENAME TABLE swaps all four names atomically.
    """
    retired = [f"{schema.CONTACTS}_retired", f"{schema.REJECTED}_retired"]
    report = load.report
    report.applied_by = "RENAME TABLE of the staged tables (contacts was empty)"
    with load.engine.connect() as conn:
        if staged:
            report.staged = report.inserted = report.contacts_after = _count(conn, schema.CONTACTS_STAGING)
            _count_statistics(conn, automatically=True)
            # `contacts` has no default for its timestamps: the staged table loses the load's time.
            drops = ", ".join(f"ALTER {name} DROP DEFAULT" for name in schema.STAMPS)
            conn.exec_driver_sql(f"ALTER TABLE {schema.CONTACTS_STAGING} {drops}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(retired)}")
            conn.exec_driver_sql(
                f"RENAME TABLE {schema.CONTACTS} TO {retired[0]}, {schema.CONTACTS_STAGING} TO {schema.CONTACTS}, "
                f"{schema.REJECTED} TO {retired[1]}, {schema.REJECTED_STAGING} TO {schema.REJECTED}"
            )
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(retired)}")
    with load.engine.begin() as conn:
        _record_load(conn, load)


def _finish(load: LoadContext, known: KnownContacts | None) -> None:
    """Swap the staged tables in when every row was staged into an empty `contacts` (MySQL), else
    apply the difference from what is `known`."""
    with load.engine.connect() as conn:
        staged = sa.inspect(conn).has_table(schema.CONTACTS_STAGING)
        empty = conn.execute(sa.text(f"SELECT 1 FROM {schema.CONTACTS} LIMIT 1")).first() is None
    # Not staged: a retry after the swap.
    if load.engine.dialect.name == "mysql" and known is None and (empty or not staged):
        _swap_in(load, staged)
    else:
        _apply(load, known)


def load_contacts(
    engine: sa.Engine,
    csv_path: Path,
    column_map: ColumnMap,
    writer: StagingWriter,
    run_id: str,
    log: logging.Logger,
    retry: RetrySettings,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    statement_rows: int = STATEMENT_ROWS,
    rules: LoadRules | None = None,
    staging_engine: sa.Engine | None = None,
    scan: FileScan | None = None,
) -> LoadReport:
    """Load `csv_path` into `contacts`; the caller holds the load lock.

    The staging writes go through `staging_engine` (default `engine`): on MySQL the only
    connections allowed LOAD DATA LOCAL. `scan` is the file's scan when it was just made (by
    kaggle_dataset, in the manifest); without it the file is scanned here.
    """
    rules = rules or LoadRules.from_settings()
    staging_engine = staging_engine or engine
    report = LoadReport(writer=writer.name)
    # Counting a million contacts takes the server ~0.2 s: as long as the scan, and beside it.
    with ThreadPoolExecutor(1) as beside:
        last_load = beside.submit(LastLoad.read, engine, schema.contact_tables(column_map))
        scan = scan or scan_file(csv_path, rules.csv)
        progress = Progress(log, "contacts_table", "rows", scan.rows)
        metadata = ensure_tables(engine, column_map)
        previous = last_load.result().identical(scan.sha256, column_map.fingerprint())
    if previous:
        log.info("contacts_table: source file identical to the load of run %s; nothing to do", previous["run_id"])
        report.skipped_identical_source = True
        report.rows_read, report.rejected = previous["rows_read"], previous["rejected"]
        report.unchanged = report.staged = report.contacts_after = previous["contacts_after"]
        report.seconds = round(progress.elapsed, 3)
        return report

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    load = LoadContext(engine, metadata, column_map, run_id, scan.sha256, now, report)
    reasons: collections.Counter = collections.Counter()
    try:
        known = call_with_retries(lambda: _known_contacts(engine), "reading the contacts' content hashes", retry, log)

        def chunks() -> Iterator[StagedChunk]:
            reasons.clear()  # a retry counts again from the start
            return staged_chunks(csv_path, column_map, writer, chunk_rows, rules.csv, scan, reasons, known)

        valid = call_with_retries(
            lambda: _stage_source(load, writer, staging_engine, chunks, statement_rows, progress, known is None),
            "staging the source rows",
            retry,
            log,
        )
        if not report.rows_read:
            raise PermanentError(f"{csv_path.name} has no data rows; nothing was changed")
        if not valid:
            top = ", ".join(f"{kind} ({count:,})" for kind, count in reasons.most_common(3))
            raise PermanentError(
                f"all {report.rows_read:,} rows of {csv_path.name} were rejected ({top}); nothing was changed"
            )

        if known is None:
            call_with_retries(lambda: _index_staging(engine), "indexing the staged rows", retry, log)
        else:
            _check_deletions(rules, known)
            gone = writer.encode(known.gone())
            call_with_retries(
                lambda: _stage_gone(staging_engine, writer, gone), "staging the removed emails", retry, log
            )
        applying = progress.elapsed
        call_with_retries(lambda: _finish(load, known), "applying the staged load", retry, log)
        report.apply_seconds = round(progress.elapsed - applying, 3)
    finally:
        _drop_staging(engine, metadata)
    report.seconds = round(progress.elapsed, 3)
    log.info("%s; %s", progress.line(), report.as_dict())
    return report
