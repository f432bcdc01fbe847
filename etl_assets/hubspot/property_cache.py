"""`hubspot_property_definitions`: the mapped contact properties as an account last listed them.

The sync reuses a listing at most HUBSPOT_PROPERTIES_MAX_AGE_SECONDS old (in `daily_etl`, the
preflight's, minutes old) instead of listing again: 100,000 contacts are 1,000 batches, ten rate
limit windows exactly, and one request more costs an eleventh. A listing is stored per account
key (a hash of the API base and the token: never the secret; a rotated token just misses it),
with only the mapped properties' definitions, and dropped when HubSpot refuses a property the
sync took from it.

The table is this module's: defined and created here (`ensure_table`), by the preflight and the sync.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from etl_assets import settings
from etl_assets.contacts import schema
from etl_assets.contacts.mapping import ColumnMap
from etl_assets.errors import PermanentError
from etl_assets.hubspot.companies_state import upsert_rows
from etl_assets.hubspot.properties import PropertyDefinition, mapping_problems

PROPERTY_DEFINITIONS = "hubspot_property_definitions"


@dataclass(frozen=True)
class Listing:
    """The account's definitions of the mapped properties (by name), and when they were listed."""

    definitions: dict[str, PropertyDefinition]
    listed_at: dt.datetime  # naive UTC, whole seconds

    def age_seconds(self, now: dt.datetime) -> float:
        return (now - self.listed_at).total_seconds()


def definitions_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        PROPERTY_DEFINITIONS,
        sa.MetaData() if metadata is None else metadata,
        sa.Column("account_key", sa.String(64), primary_key=True),
        # {name: every field of PropertyDefinition}; an enumeration's options can outgrow TEXT
        sa.Column("definitions", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=False),
        sa.Column("listed_at", schema.DATETIME, nullable=False),
        **schema.MYSQL_TABLE_ARGS,
    )


def ensure_table(engine: sa.Engine) -> None:
    definitions_table().create(engine, checkfirst=True)


def max_age_seconds() -> int:
    """HUBSPOT_PROPERTIES_MAX_AGE_SECONDS: how old a stored listing the sync reuses; 0 never."""
    seconds = settings.int_setting(settings.HUBSPOT_PROPERTIES_MAX_AGE_SECONDS)
    if seconds < 0:
        raise PermanentError(f"{settings.HUBSPOT_PROPERTIES_MAX_AGE_SECONDS} must be 0 or more seconds, got {seconds}")
    return seconds


def why_not_reuse(listing: Listing | None, column_map: ColumnMap, max_age_s: int, at: dt.datetime) -> str | None:
    """Why `listing` cannot stand in for a new one at `at`; None when it can.

    It must be recent and show every mapped property usable: a missing one (to be created) or one
    with a problem is listed again, so the sync acts on HubSpot's current answer.
    """
    if max_age_s == 0:
        return f"{settings.HUBSPOT_PROPERTIES_MAX_AGE_SECONDS}=0"
    if listing is None:
        return "no stored listing for this account"
    age = listing.age_seconds(at)
    if age > max_age_s:
        return f"the stored listing is {age:.0f} s old, more than {max_age_s} s"
    # with may_create=False a property missing from the listing is a problem too
    problems = mapping_problems(column_map, listing.definitions, may_create=False).values()
    problem = next((problem for problem in problems if problem), None)
    if problem:
        return f"the stored listing shows a problem: {problem}"
    # An option added in HubSpot since would be refused here, and the contact held until its data
    # changes: a dropdown's options are always taken fresh.
    mapped = [spec.hubspot or "" for spec in column_map.hubspot_fields]
    enumeration = next((name for name in mapped if listing.definitions[name].checks_options), None)
    return f"property {enumeration!r} is a dropdown: its options are listed every run" if enumeration else None


def _encode(definitions: Mapping[str, PropertyDefinition]) -> str:
    return json.dumps({name: dataclasses.asdict(definition) for name, definition in definitions.items()})


def _decode(text: str) -> dict[str, PropertyDefinition]:
    return {
        name: PropertyDefinition(**{**fields, "options": tuple(tuple(option) for option in fields["options"])})
        for name, fields in json.loads(text).items()
    }


def store(
    engine: sa.Engine,
    account_key: str,
    column_map: ColumnMap,
    definitions: Mapping[str, PropertyDefinition],
    listed_at: dt.datetime,
) -> None:
    """Keep the mapped properties of a listing taken at `listed_at`, replacing the account's last one."""
    mapped = {spec.hubspot for spec in column_map.hubspot_fields}
    kept = {name: definition for name, definition in definitions.items() if name in mapped}
    upsert_rows(
        engine,
        definitions_table(),
        [{"account_key": account_key, "definitions": _encode(kept), "listed_at": listed_at}],
    )


def stored(engine: sa.Engine, account_key: str) -> Listing | None:
    table = definitions_table()
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.account_key == account_key)).first()
    return None if row is None else Listing(_decode(row.definitions), row.listed_at)


def forget(engine: sa.Engine, account_key: str) -> None:
    """Drop the account's stored listing: the next sync lists the properties again."""
    table = definitions_table()
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.account_key == account_key))
