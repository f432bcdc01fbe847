"""The company sync's own tables, beside `hubspot_sync_state`: defined and created here only.

* `hubspot_company_state`, one row per company key: its HubSpot id, the content HubSpot last
  accepted (`synced_hash`) and the last attempt's outcome. A company is due when it has no id,
  when its content changed, or when its last attempt failed for a reason a retry can fix; one
  HubSpot refused for its data waits until its data changes.
* `hubspot_contact_company`, one row per contact the sync associated: the pair it created and
  holds (`contact_id`, `company_id`, `company_key`; NULL when it holds none) and the last attempt.
  Only pairs recorded here are ever removed from HubSpot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

from etl_assets.contacts import schema
from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.hubspot import state

COMPANY_STATE = "hubspot_company_state"
CONTACT_COMPANY = "hubspot_contact_company"


def company_state_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        COMPANY_STATE,
        sa.MetaData() if metadata is None else metadata,
        sa.Column("company_key", sa.String(300), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("domain", sa.String(253)),
        sa.Column("hubspot_id", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),  # synced | failed
        sa.Column("synced_hash", sa.CHAR(32)),
        sa.Column("attempted_hash", sa.CHAR(32), nullable=False),
        sa.Column("last_outcome", sa.String(16), nullable=False),  # created | updated | failed
        sa.Column("error_category", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_transient", sa.Boolean, nullable=False, default=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", schema.DATETIME, nullable=False),
        **schema.MYSQL_TABLE_ARGS,
    )


def contact_company_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        CONTACT_COMPANY,
        sa.MetaData() if metadata is None else metadata,
        sa.Column(EMAIL_FIELD, sa.String(254), primary_key=True),
        # the association this sync created and holds (all NULL: none)
        sa.Column("contact_id", sa.String(32)),
        sa.Column("company_id", sa.String(32)),
        sa.Column("company_key", sa.String(300)),
        sa.Column("status", sa.String(16), nullable=False),  # associated | failed
        sa.Column("attempted", sa.String(400)),  # what the last failed attempt wanted (Wanted.fingerprint)
        sa.Column("error_category", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_transient", sa.Boolean, nullable=False, default=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", schema.DATETIME, nullable=False),
        **schema.MYSQL_TABLE_ARGS,
    )


def ensure_tables(engine: sa.Engine) -> None:
    """Create the company tables (and the contacts' sync state, which associations read) if missing."""
    state.ensure_table(engine)
    for table in (company_state_table(), contact_company_table()):
        table.create(engine, checkfirst=True)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class ContactRow:
    email: str
    name: str | None
    website: str | None
    contact_id: str | None  # the id HubSpot gave the contact, if it ever accepted it


def contact_rows(engine: sa.Engine, column_map: ColumnMap, page_size: int = 20_000) -> Iterator[ContactRow]:
    """Every contact's company columns and HubSpot id, in email order (keyset pages)."""
    columns = [column_map.company_field(role) for role in ("name", "domain")]
    selected = ", ".join(f"c.{name}" if name else "NULL" for name in columns)
    query = sa.text(
        f"SELECT c.email, {selected}, s.hubspot_id FROM {schema.CONTACTS} c "
        f"LEFT JOIN {state.SYNC_STATE} s ON s.email = c.email WHERE c.email > :after ORDER BY c.email LIMIT :limit"
    )
    after = ""
    while True:
        with engine.connect() as conn:
            page = conn.execute(query, {"after": after, "limit": page_size}).all()
        if not page:
            return
        for email, name, website, contact_id in page:
            yield ContactRow(email, name, website, contact_id)
        after = page[-1][0]


def company_states(engine: sa.Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(company_state_table())).mappings().all()
    return {row["company_key"]: dict(row) for row in rows}


def contact_company_states(engine: sa.Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(contact_company_table())).mappings().all()
    return {row[EMAIL_FIELD]: dict(row) for row in rows}


def upsert_rows(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> None:
    """Insert `rows`, replacing every column of those whose primary key exists."""
    if not rows:
        return
    key = [column.name for column in table.primary_key.columns]
    statement: sa.Executable
    with engine.begin() as conn:
        if conn.dialect.name == "mysql":
            on_mysql = mysql.insert(table)
            statement = on_mysql.on_duplicate_key_update({name: on_mysql.inserted[name] for name in rows[0]})
        elif conn.dialect.name == "sqlite":
            on_sqlite = sqlite.insert(table)
            statement = on_sqlite.on_conflict_do_update(
                index_elements=key, set_={name: on_sqlite.excluded[name] for name in rows[0] if name not in key}
            )
        else:
            raise NotImplementedError(f"no upsert for {conn.dialect.name}")
        conn.execute(statement, rows)


def delete_contact_companies(engine: sa.Engine, emails: list[str]) -> None:
    if emails:
        table = contact_company_table()
        with engine.begin() as conn:
            conn.execute(table.delete().where(table.c.email.in_(emails)))


def failure_summary(engine: sa.Engine, table: sa.Table, top: int = 5) -> dict:
    """Rows, failed rows and the most common reasons, for the checks."""
    with engine.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        reasons = conn.execute(
            sa.select(table.c.error_category, sa.func.count().label("n"))
            .where(table.c.status == "failed")
            .group_by(table.c.error_category)
            .order_by(sa.text("n DESC"))
        ).all()
    return {
        "rows": total,
        "failed": sum(n for _category, n in reasons),
        "top_reasons": {str(category): n for category, n in reasons[:top]},
    }
