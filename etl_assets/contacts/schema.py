"""Table definitions, derived from the column map so a new mapped field is a new column."""

from __future__ import annotations

import sqlalchemy as sa

from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import HASH_COLUMN, ROW_COLUMN

CONTACTS = "contacts"
CONTACTS_STAGING = "contacts_staging"
REJECTED = "contacts_rejected"
REJECTED_STAGING = "contacts_rejected_staging"
REMOVED = "contacts_removed"
LOADS = "etl_loads"
SYNC_STATE = "hubspot_sync_state"
EMAIL_INDEX = f"ux_{CONTACTS}_email"

_MYSQL_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _contact_columns(column_map: ColumnMap) -> list[sa.Column]:
    """`contacts` and its staging twin have these same columns, so one can replace the other."""
    columns = [sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
               sa.Column(ROW_COLUMN, sa.Integer, nullable=False)]
    for spec in column_map.fields:
        if spec.field == EMAIL_FIELD:
            columns.append(sa.Column(EMAIL_FIELD, sa.String(254), nullable=False))
        elif spec.type == "date":
            columns.append(sa.Column(spec.field, sa.Date))
        else:
            columns.append(sa.Column(spec.field, sa.String(spec.max_length)))
    return columns + [
        sa.Column(HASH_COLUMN, sa.CHAR(32), nullable=False),
        sa.Column("first_loaded_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    ]


def staging_email_index(dialect: str) -> sa.TextClause:
    # MySQL names indexes per table, so the staged table gets the name `contacts` has and can be
    # swapped in as it is; SQLite names them per database, so there the twin needs its own.
    name = EMAIL_INDEX if dialect == "mysql" else f"ux_{CONTACTS_STAGING}_email"
    return sa.text(f"CREATE UNIQUE INDEX {name} ON {CONTACTS_STAGING} ({EMAIL_FIELD})")


def _loads(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        LOADS, metadata,
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
        sa.Column("loaded_at", sa.DateTime, nullable=False),
        **_MYSQL_TABLE_ARGS,
    )


def loads_table() -> sa.Table:
    """`etl_loads` alone: one row per applied load, newest last."""
    return _loads(sa.MetaData())


def _sync_state(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        SYNC_STATE, metadata,
        sa.Column(EMAIL_FIELD, sa.String(254), primary_key=True),
        sa.Column("hubspot_id", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),  # synced | failed
        sa.Column("synced_hash", sa.CHAR(32)),  # last content HubSpot accepted
        sa.Column("attempted_hash", sa.CHAR(32), nullable=False),
        sa.Column("last_outcome", sa.String(16), nullable=False),  # created | updated | failed
        sa.Column("error_category", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_transient", sa.Boolean, nullable=False, default=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime, nullable=False),
        sa.Column("synced_at", sa.DateTime),
        sa.Index("ix_hubspot_sync_state_status", "status"),
        **_MYSQL_TABLE_ARGS,
    )


def sync_state_table() -> sa.Table:
    """`hubspot_sync_state` alone: its shape does not depend on the column map."""
    return _sync_state(sa.MetaData())


def contact_tables(column_map: ColumnMap) -> sa.MetaData:
    """`contacts` and its staging twin, the reject tables, removed contacts, the load log and the sync state."""
    metadata = sa.MetaData()
    sa.Table(CONTACTS, metadata, *_contact_columns(column_map),
             sa.Index(EMAIL_INDEX, EMAIL_FIELD, unique=True), **_MYSQL_TABLE_ARGS)
    # No index while chunks append in key order (`id` is the source row); the email index is
    # built once, after the last chunk (see staging_email_index), much cheaper than per row.
    sa.Table(CONTACTS_STAGING, metadata, *_contact_columns(column_map), **_MYSQL_TABLE_ARGS)
    for name in (REJECTED, REJECTED_STAGING):
        sa.Table(
            name, metadata,
            sa.Column(ROW_COLUMN, sa.Integer, primary_key=True, autoincrement=False),
            sa.Column(EMAIL_FIELD, sa.String(1000)),
            sa.Column("raw_values", sa.Text, nullable=False),
            sa.Column("reason", sa.String(1000), nullable=False),
            **_MYSQL_TABLE_ARGS,
        )
    # What loads deleted, so nothing a load removes is gone for good; the values as JSON, so a
    # later change of the column map does not change this table.
    sa.Table(
        REMOVED, metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column(EMAIL_FIELD, sa.String(254), nullable=False),
        sa.Column(HASH_COLUMN, sa.CHAR(32), nullable=False),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("removed_by_run", sa.String(64), nullable=False),  # etl_loads.run_id of the load
        sa.Column("removed_at", sa.DateTime, nullable=False),
        sa.Index(f"ix_{REMOVED}_email", EMAIL_FIELD),
        **_MYSQL_TABLE_ARGS,
    )
    _loads(metadata)
    _sync_state(metadata)
    return metadata
