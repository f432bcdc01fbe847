"""`hubspot_sync_state`: what HubSpot last accepted for each contact, and what it refused.

A contact is due when HubSpot has never accepted it, when its content changed since HubSpot
last accepted it, or when its last attempt failed for a reason a retry can fix. A contact
HubSpot refused for its data waits until its data changes; one whose result could not be
matched is sent on MAX_UNMATCHED_RUNS runs, then waits too. `attempts` counts the attempts
since HubSpot last accepted the contact.

The table is this module's: defined and created here (`ensure_table`), by the sync and its check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

from etl_assets.contacts import schema
from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import HASH_COLUMN
from etl_assets.hubspot.sync import HUBSPOT_ID_FIELD, MAX_UNMATCHED_RUNS, UNMATCHED, ContactOutcome

SYNC_STATE = "hubspot_sync_state"


def sync_state_table(metadata: sa.MetaData | None = None) -> sa.Table:
    """`hubspot_sync_state`: its shape does not depend on the column map."""
    return sa.Table(
        SYNC_STATE,
        sa.MetaData() if metadata is None else metadata,
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
        **schema.MYSQL_TABLE_ARGS,
    )


def ensure_table(engine: sa.Engine) -> None:
    """Create `hubspot_sync_state` if it is missing."""
    sync_state_table().create(engine, checkfirst=True)


_DUE = (
    "s.email IS NULL"
    " OR (s.status = 'synced' AND s.synced_hash <> c.content_hash)"
    " OR (s.status = 'failed' AND (s.attempted_hash <> c.content_hash OR (s.error_transient = 1"
    f" AND (s.error_category <> '{UNMATCHED}' OR s.attempts < {MAX_UNMATCHED_RUNS}))))"
)


def count_due(conn: sa.Connection) -> int:
    return int(
        conn.execute(
            sa.text(
                f"SELECT COUNT(*) FROM {schema.CONTACTS} c LEFT JOIN {SYNC_STATE} s ON s.email = c.email WHERE {_DUE}"
            )
        ).scalar_one()
    )


def due_contacts(engine: sa.Engine, column_map: ColumnMap, page_size: int = 10_000) -> Iterator[list[dict]]:
    """Pages of due contacts in email order (keyset pagination: bounded memory, stable under writes)."""
    columns = ", ".join(f"c.{name}" for name in column_map.field_names + [HASH_COLUMN])
    columns += f", s.hubspot_id AS {HUBSPOT_ID_FIELD}"
    query = sa.text(
        f"SELECT {columns} FROM {schema.CONTACTS} c LEFT JOIN {SYNC_STATE} s ON s.email = c.email "
        f"WHERE c.email > :after AND ({_DUE}) ORDER BY c.email LIMIT :limit"
    )
    after = ""
    while True:
        with engine.connect() as conn:
            page = [dict(row) for row in conn.execute(query, {"after": after, "limit": page_size}).mappings()]
        if not page:
            return
        yield page
        after = page[-1][EMAIL_FIELD]


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], updates: dict) -> None:
    statement: sa.Executable
    if conn.dialect.name == "mysql":
        on_mysql = mysql.insert(table)
        statement = on_mysql.on_duplicate_key_update(
            {name: (on_mysql.inserted[name] if value is None else value) for name, value in updates.items()}
        )
    elif conn.dialect.name == "sqlite":
        on_sqlite = sqlite.insert(table)
        statement = on_sqlite.on_conflict_do_update(
            index_elements=[EMAIL_FIELD],
            set_={name: (on_sqlite.excluded[name] if value is None else value) for name, value in updates.items()},
        )
    else:
        raise NotImplementedError(f"no upsert for {conn.dialect.name}")
    conn.execute(statement, rows)


def record_outcomes(engine: sa.Engine, outcomes: list[ContactOutcome], run_id: str) -> None:
    """Store one batch's outcomes; a failure keeps the last hash and id HubSpot accepted."""
    if not outcomes:
        return
    table = sync_state_table()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    synced = [
        dict(
            email=o.email,
            hubspot_id=o.hubspot_id,
            status="synced",
            synced_hash=o.content_hash,
            attempted_hash=o.content_hash,
            last_outcome=o.outcome,
            error_category=None,
            error_message=None,
            error_transient=False,
            attempts=0,
            run_id=run_id,
            last_attempt_at=now,
            synced_at=now,
        )
        for o in outcomes
        if o.outcome != "failed"
    ]
    failed = [
        dict(
            email=o.email,
            hubspot_id=None,
            status="failed",
            synced_hash=None,
            attempted_hash=o.content_hash,
            last_outcome="failed",
            error_category=o.error_category,
            error_message=o.error_message,
            error_transient=o.transient,
            attempts=1,
            run_id=run_id,
            last_attempt_at=now,
            synced_at=None,
        )
        for o in outcomes
        if o.outcome == "failed"
    ]
    # Literal SQL, not a bound parameter: PyMySQL's executemany cannot bind in the ON DUPLICATE tail.
    attempts: sa.ColumnElement = sa.literal_column(f"{SYNC_STATE}.attempts + 1")
    with engine.begin() as conn:
        if synced:
            _upsert(conn, table, synced, {name: None for name in synced[0] if name != EMAIL_FIELD})
        if failed:
            kept = {"hubspot_id", "synced_hash", "synced_at"}
            _upsert(
                conn,
                table,
                failed,
                {name: None for name in failed[0] if name != EMAIL_FIELD and name not in kept} | {"attempts": attempts},
            )


def failure_summary(conn: sa.Connection, top: int = 5) -> dict:
    """Counts for the sync-quality check: contacts, failed, and the most common reasons."""
    contacts = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {schema.CONTACTS}")).scalar_one())
    rows = conn.execute(
        sa.text(
            f"SELECT s.error_category, COUNT(*) AS n FROM {SYNC_STATE} s JOIN {schema.CONTACTS} c "
            f"ON c.email = s.email WHERE s.status = 'failed' GROUP BY s.error_category ORDER BY n DESC"
        )
    ).all()
    failed = sum(n for _category, n in rows)
    return {"contacts": contacts, "failed": failed, "top_reasons": {category: n for category, n in rows[:top]}}
