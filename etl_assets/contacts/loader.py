"""Loading a contacts CSV into the database: staged, then applied in one transaction.

Readers of `contacts` see the previous load or the new one, never a half-written table: every
chunk lands in `contacts_staging` first, and a single transaction applies the difference
(insert new, update changed, delete gone, replace the reject list, log the load). A crash
at any point leaves `contacts` as it was; a re-run converges to the same result.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from etl_assets.contacts import schema
from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import HASH_COLUMN, ROW_COLUMN, SeenEmails, check_columns, prepare_chunk
from etl_assets.contacts.staging import StagingWriter
from etl_assets.errors import PermanentError
from etl_assets.progress import Progress
from etl_assets.retrying import RetrySettings, call_with_retries

DEFAULT_CHUNK_ROWS = 10_000  # ~370 MB peak at 1M rows, no slower than 50k (benchmarks/)


@dataclass
class LoadReport:
    rows_read: int = 0
    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    contacts_after: int = 0
    skipped_identical_source: bool = False
    writer: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_data_rows(path: Path) -> int:
    """Newlines minus the header: exact for CSVs without quoted line breaks, used for ETA only."""
    with path.open("rb") as handle:
        return max(sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) - 1, 0)


def csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def read_chunks(path: Path, column_map: ColumnMap, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The CSV in chunks of about `chunk_rows`, every value a string (never NULL).

    Arrow's streaming reader parses in C, in small blocks (large blocks cost hundreds of MB of
    read-ahead for no speed), gathered here into chunks big enough for vectorised work. Memory
    stays bounded whatever the file size. Fails first, naming them, if mapped columns are missing.
    """
    header = csv_header(path)
    check_columns(header, column_map)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 20, column_names=header, skip_rows=1),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=column_map.sources, strings_can_be_null=False,
            column_types={source: pa.string() for source in column_map.sources}),
    )
    pending: list[pa.RecordBatch] = []
    for batch in reader:
        pending.append(batch)
        if sum(item.num_rows for item in pending) >= chunk_rows:
            yield pa.Table.from_batches(pending).to_pandas()
            pending = []
    if pending:
        yield pa.Table.from_batches(pending).to_pandas()


def ensure_tables(engine: sa.Engine, column_map: ColumnMap) -> sa.MetaData:
    metadata = schema.contact_tables(column_map)
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if "staging" not in t.name])
    existing = {column["name"] for column in sa.inspect(engine).get_columns(schema.CONTACTS)}
    missing = [name for name in metadata.tables[schema.CONTACTS].columns.keys() if name not in existing]
    if missing:
        raise PermanentError(
            f"table {schema.CONTACTS} lacks column(s) {missing} that the column map "
            f"({column_map.origin}) needs; add them or drop the table to have it recreated"
        )
    return metadata


def _recreate_staging(engine: sa.Engine, metadata: sa.MetaData) -> None:
    staging = [metadata.tables[schema.CONTACTS_STAGING], metadata.tables[schema.REJECTED_STAGING]]
    metadata.drop_all(engine, tables=staging)
    metadata.create_all(engine, tables=staging)


def _index_staging(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        existing = {index["name"] for index in sa.inspect(conn).get_indexes(schema.CONTACTS_STAGING)}
        if f"ix_{schema.CONTACTS_STAGING}_email" not in existing:  # a retry may find it built
            conn.execute(schema.STAGING_EMAIL_INDEX)


def _previous_load_matches(conn: sa.Connection, metadata: sa.MetaData, sha: str, fingerprint: str) -> dict | None:
    loads = metadata.tables[schema.LOADS]
    last = conn.execute(sa.select(loads).order_by(loads.c.id.desc()).limit(1)).mappings().first()
    if not last or last["source_sha256"] != sha or last["mapping_fingerprint"] != fingerprint:
        return None
    count = conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[schema.CONTACTS])).scalar_one()
    return dict(last) if count == last["contacts_after"] else None


def _upsert_changed_sql(dialect: str, column_map: ColumnMap) -> str:
    fields = column_map.field_names + [HASH_COLUMN, ROW_COLUMN]
    quote = (lambda name: f"`{name}`") if dialect == "mysql" else (lambda name: f'"{name}"')
    columns = ", ".join(quote(name) for name in fields + ["first_loaded_at", "updated_at"])
    selected = ", ".join(f"s.{quote(name)}" for name in fields) + ", :now, :now"
    source = (
        f"SELECT {selected} FROM {schema.CONTACTS_STAGING} s "
        f"LEFT JOIN {schema.CONTACTS} c ON c.{EMAIL_FIELD} = s.{EMAIL_FIELD} "
        # Only new or changed content is written: a row that merely moved in the file keeps its
        # source_row, so inserting one line near the top does not rewrite the whole table.
        f"WHERE c.{EMAIL_FIELD} IS NULL OR c.{HASH_COLUMN} <> s.{HASH_COLUMN} "
        # In key order, InnoDB appends to the clustered index instead of splitting pages at random.
        f"ORDER BY s.{EMAIL_FIELD}"
    )
    updated = [name for name in fields if name != EMAIL_FIELD]
    if dialect == "mysql":
        # updated_at first: MySQL applies assignments left to right, so it still sees the old hash.
        target = f"{schema.CONTACTS}."
        assignments = [f"{target}updated_at = IF({target}{HASH_COLUMN} = VALUES({HASH_COLUMN}), "
                       f"{target}updated_at, VALUES(updated_at))"]
        assignments += [f"{target}{quote(name)} = VALUES({quote(name)})" for name in updated]
        return f"INSERT INTO {schema.CONTACTS} ({columns}) {source} ON DUPLICATE KEY UPDATE {', '.join(assignments)}"
    assignments = [
        f"updated_at = CASE WHEN {schema.CONTACTS}.{HASH_COLUMN} = excluded.{HASH_COLUMN} "
        f"THEN {schema.CONTACTS}.updated_at ELSE excluded.updated_at END"
    ]
    assignments += [f"{quote(name)} = excluded.{quote(name)}" for name in updated]
    return f"INSERT INTO {schema.CONTACTS} ({columns}) {source} ON CONFLICT({EMAIL_FIELD}) DO UPDATE SET {', '.join(assignments)}"


def _apply(engine: sa.Engine, metadata: sa.MetaData, column_map: ColumnMap, report: LoadReport,
           run_id: str, sha: str) -> None:
    """Make `contacts` equal the staged rows, in one transaction."""
    contacts, staging = schema.CONTACTS, schema.CONTACTS_STAGING
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        scalar = lambda sql: int(conn.execute(sa.text(sql)).scalar_one() or 0)  # noqa: E731
        staged, inserted, updated = conn.execute(sa.text(
            f"SELECT COUNT(*), SUM(CASE WHEN c.email IS NULL THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN c.{HASH_COLUMN} <> s.{HASH_COLUMN} THEN 1 ELSE 0 END) "
            f"FROM {staging} s LEFT JOIN {contacts} c ON c.email = s.email")).one()
        report.staged, report.inserted, report.updated = int(staged), int(inserted or 0), int(updated or 0)
        report.unchanged = report.staged - report.inserted - report.updated
        report.deleted = scalar(
            f"SELECT COUNT(*) FROM {contacts} c WHERE NOT EXISTS "
            f"(SELECT 1 FROM {staging} s WHERE s.email = c.email)")
        conn.execute(sa.text(_upsert_changed_sql(engine.dialect.name, column_map)), {"now": now})
        conn.execute(sa.text(
            f"DELETE FROM {contacts} WHERE NOT EXISTS "
            f"(SELECT 1 FROM {staging} s WHERE s.email = {contacts}.email)"))
        conn.execute(sa.text(f"DELETE FROM {schema.REJECTED}"))
        conn.execute(sa.text(f"INSERT INTO {schema.REJECTED} SELECT * FROM {schema.REJECTED_STAGING}"))
        report.contacts_after = scalar(f"SELECT COUNT(*) FROM {contacts}")
        conn.execute(sa.insert(metadata.tables[schema.LOADS]).values(
            run_id=run_id, source_sha256=sha, mapping_fingerprint=column_map.fingerprint(),
            rows_read=report.rows_read, inserted=report.inserted, updated=report.updated,
            unchanged=report.unchanged, deleted=report.deleted, rejected=report.rejected,
            contacts_after=report.contacts_after, loaded_at=now,
        ))


def load_contacts(
    engine: sa.Engine,
    csv_path: Path,
    column_map: ColumnMap,
    writer: StagingWriter,
    run_id: str,
    log: logging.Logger,
    retry: RetrySettings,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> LoadReport:
    """Load `csv_path` into `contacts`; the caller holds the load lock."""
    report = LoadReport(writer=writer.name)
    progress = Progress(log, "contacts_table", "rows", count_data_rows(csv_path))
    metadata = ensure_tables(engine, column_map)
    sha = file_sha256(csv_path)
    with engine.connect() as conn:
        previous = _previous_load_matches(conn, metadata, sha, column_map.fingerprint())
    if previous:
        log.info("contacts_table: source file identical to the load of run %s; nothing to do", previous["run_id"])
        report.skipped_identical_source = True
        report.rows_read, report.rejected = previous["rows_read"], previous["rejected"]
        report.unchanged = report.staged = report.contacts_after = previous["contacts_after"]
        report.seconds = round(progress.elapsed, 3)
        return report

    call_with_retries(lambda: _recreate_staging(engine, metadata), "creating staging tables", retry, log)
    seen = SeenEmails()
    for raw in read_chunks(csv_path, column_map, chunk_rows):
        chunk = prepare_chunk(raw, column_map, report.rows_read + 1, seen)
        report.rows_read += len(raw)
        report.rejected += len(chunk.rejected)
        rejected = pd.DataFrame(chunk.rejected, columns=[ROW_COLUMN, EMAIL_FIELD, "raw_values", "reason"])

        def stage(valid=chunk.valid, rejected=rejected) -> None:
            with engine.begin() as conn:
                writer.write(conn, schema.CONTACTS_STAGING, valid)
                writer.write(conn, schema.REJECTED_STAGING, rejected)

        call_with_retries(stage, f"staging rows {report.rows_read - len(raw) + 1}-{report.rows_read}", retry, log)
        progress.add(len(raw))

    call_with_retries(lambda: _index_staging(engine), "indexing the staged rows", retry, log)
    call_with_retries(lambda: _apply(engine, metadata, column_map, report, run_id, sha),
                      "applying the staged load", retry, log)
    report.seconds = round(progress.elapsed, 3)
    log.info("%s; %s", progress.line(), report.as_dict())
    return report
