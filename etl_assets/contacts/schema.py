"""The contacts tables: defined and created here, and nowhere else.

`contacts` and its staging twin are derived from the column map, so a new mapped field is a new
column; beside them the reject list (`contacts_rejected`, its staging twin), the contacts loads
removed (`contacts_removed`) and the load log (`etl_loads`). `hubspot_sync_state` is the sync's
own table, in etl_assets.hubspot.state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from etl_assets.contacts import records
from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import CODE_COLUMN, HASH_COLUMN, REASON_COLUMN, ROW_COLUMN

CONTACTS = "contacts"
CONTACTS_STAGING = "contacts_staging"
REJECTED = "contacts_rejected"
REJECTED_STAGING = "contacts_rejected_staging"
GONE_STAGING = "contacts_gone_staging"  # ids and emails of the contacts a load removes
REMOVED = "contacts_removed"
LOADS = "etl_loads"
EMAIL_INDEX = f"ux_{CONTACTS}_email"
STAMPS = ("first_loaded_at", "updated_at")  # when a contact was first loaded, last changed

# Every time this project stores, in whole seconds. Spelled out for MySQL: once Dagster's SQL storage
# is imported (every Dagster run imports it), it compiles SQLAlchemy's DateTime as DATETIME(6) there,
# so the same table would come out DATETIME(6) in a run and DATETIME in a plain process.
DATETIME = sa.DateTime().with_variant(mysql.DATETIME(), "mysql")

MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _contact_columns(column_map: ColumnMap, staged_at: dt.datetime | None = None) -> list[sa.Column]:
    """`contacts` and its staging twin have these same columns, so one can replace the other. With
    `staged_at`, both timestamps default to it: the twin of one load, whose rows are sent without
    them (see staging_tables)."""
    columns: list[sa.Column] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(ROW_COLUMN, sa.Integer, nullable=False),
    ]
    for spec in column_map.fields:
        if spec.field == EMAIL_FIELD:
            columns.append(sa.Column(EMAIL_FIELD, sa.String(254), nullable=False))
        elif spec.type == "date":
            columns.append(sa.Column(spec.field, sa.Date))
        else:
            columns.append(sa.Column(spec.field, sa.String(spec.max_length)))
    stamp = sa.text(f"'{staged_at:%Y-%m-%d %H:%M:%S}'") if staged_at else None
    return columns + [
        sa.Column(HASH_COLUMN, sa.CHAR(32), nullable=False),
        *(sa.Column(name, DATETIME, nullable=False, server_default=stamp) for name in STAMPS),
    ]


def staging_email_index(dialect: str) -> sa.TextClause:
    # MySQL names indexes per table, so the staged table gets the name `contacts` has and can be
    # swapped in as it is; SQLite names them per database, so there the twin needs its own.
    name = EMAIL_INDEX if dialect == "mysql" else f"ux_{CONTACTS_STAGING}_email"
    return sa.text(f"CREATE UNIQUE INDEX {name} ON {CONTACTS_STAGING} ({EMAIL_FIELD})")


def _loads(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        LOADS,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("source_sha256", sa.CHAR(64), nullable=False),
        sa.Column("mapping_fingerprint", sa.String(32), nullable=False),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("inserted", sa.Integer, nullable=False),
        sa.Column("updated", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("contacts_after", sa.Integer, nullable=False),
        sa.Column("loaded_at", DATETIME, nullable=False),
        **MYSQL_TABLE_ARGS,
    )


def loads_table() -> sa.Table:
    """`etl_loads` alone: one row per applied load, newest last."""
    return _loads(sa.MetaData())


def _rejected(metadata: sa.MetaData, name: str) -> None:
    sa.Table(
        name,
        metadata,
        sa.Column(ROW_COLUMN, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(EMAIL_FIELD, sa.String(1000)),
        sa.Column("raw_values", sa.Text, nullable=False),
        sa.Column(REASON_COLUMN, sa.String(1000), nullable=False),
        sa.Column(CODE_COLUMN, sa.String(32), nullable=False),  # the reason's kind (records.py)
        **MYSQL_TABLE_ARGS,
    )


def _staging_twins(metadata: sa.MetaData, column_map: ColumnMap, staged_at: dt.datetime | None) -> None:
    # No index while chunks append in key order (`id` is the source row); the email index is
    # built once, after the last chunk (see staging_email_index), much cheaper than per row.
    sa.Table(CONTACTS_STAGING, metadata, *_contact_columns(column_map, staged_at), **MYSQL_TABLE_ARGS)
    sa.Table(
        GONE_STAGING,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(EMAIL_FIELD, sa.String(254), nullable=False),
        **MYSQL_TABLE_ARGS,
    )
    _rejected(metadata, REJECTED_STAGING)


def staging_tables(column_map: ColumnMap, staged_at: dt.datetime) -> list[sa.Table]:
    """The staging twins of one load: its rows are sent without their timestamps, which take
    `staged_at` by default. The server copies a default where it reads a sent value byte by byte
    and converts it: 40 of each row's 250 bytes. A first load of 1M rows (MariaDB 10.11, eight
    interleaved pairs): faster in seven, medians 15.84 s → 14.95 s, the server's CPU lower in seven."""
    metadata = sa.MetaData()
    _staging_twins(metadata, column_map, staged_at)
    return list(metadata.tables.values())


def contact_tables(column_map: ColumnMap) -> sa.MetaData:
    """`contacts` and its staging twin, the reject tables, removed contacts and the load log."""
    metadata = sa.MetaData()
    sa.Table(
        CONTACTS,
        metadata,
        *_contact_columns(column_map),
        sa.Index(EMAIL_INDEX, EMAIL_FIELD, unique=True),
        **MYSQL_TABLE_ARGS,
    )
    _staging_twins(metadata, column_map, staged_at=None)
    _rejected(metadata, REJECTED)
    # What loads deleted, so nothing a load removes is gone for good; the values as JSON, so a
    # later change of the column map does not change this table.
    sa.Table(
        REMOVED,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column(EMAIL_FIELD, sa.String(254), nullable=False),
        sa.Column(HASH_COLUMN, sa.CHAR(32), nullable=False),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("removed_by_run", sa.String(64), nullable=False),  # etl_loads.run_id of the load
        sa.Column("removed_at", DATETIME, nullable=False),
        sa.Index(f"ix_{REMOVED}_email", EMAIL_FIELD),
        **MYSQL_TABLE_ARGS,
    )
    _loads(metadata)
    return metadata


def create_tables(engine: sa.Engine, column_map: ColumnMap) -> sa.MetaData:
    """Create the tables that are missing (not the staging twins: each load makes its own) and bring
    a reject list from before reason codes up to date; the tables' metadata."""
    metadata = contact_tables(column_map)
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if "staging" not in t.name])
    add_reason_codes(engine)
    return metadata


# The codes of reasons written before the code column existed, by how their text starts.
_CODES_OF_OLD_REASONS = [
    ("invalid email%", records.INVALID_EMAIL),
    ("duplicate email%", records.DUPLICATE),
    ("missing required%", records.MISSING_REQUIRED),
    ("invalid date%", records.INVALID_DATE),
    ("wrong number of fields%", records.WRONG_FIELD_COUNT),
    ("row longer than%", records.ROW_TOO_LONG),
    ("a field longer than%", records.FIELD_TOO_LONG),
    ("broken quoting%", records.BROKEN_QUOTING),
    ("%longer than % characters", records.TOO_LONG),
]


def add_reason_codes(engine: sa.Engine) -> None:
    """`contacts_rejected` as an earlier version created it lacks the code column: add it, and fill
    it in from the reasons' text (once; a load then rewrites the whole list with codes)."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(REJECTED) or CODE_COLUMN in {c["name"] for c in inspector.get_columns(REJECTED)}:
            return
    cases = " ".join(f"WHEN {REASON_COLUMN} LIKE '{pattern}' THEN '{code}'" for pattern, code in _CODES_OF_OLD_REASONS)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {REJECTED} ADD COLUMN {CODE_COLUMN} VARCHAR(32) NOT NULL DEFAULT ''"))
        conn.execute(sa.text(f"UPDATE {REJECTED} SET {CODE_COLUMN} = CASE {cases} ELSE '{records.UNPARSEABLE}' END"))
