"""The tables' shape on a real MariaDB: the same whatever the process imported before."""

import datetime as dt

# What every Dagster run imports: it makes SQLAlchemy's plain DateTime compile as DATETIME(6) on
# MySQL, for any table created in the process afterwards.
import dagster._core.storage.sql  # noqa: F401
import sqlalchemy as sa

from etl_assets.contacts import schema
from etl_assets.contacts.mapping import load_column_map
from etl_assets.hubspot import companies_state, property_cache, state

TIMES = {
    (schema.CONTACTS, "first_loaded_at"),
    (schema.CONTACTS, "updated_at"),
    (schema.CONTACTS_STAGING, "first_loaded_at"),
    (schema.CONTACTS_STAGING, "updated_at"),
    (schema.LOADS, "loaded_at"),
    (schema.REMOVED, "removed_at"),
    (state.SYNC_STATE, "last_attempt_at"),
    (state.SYNC_STATE, "synced_at"),
    (property_cache.definitions_table().name, "listed_at"),
    (companies_state.company_state_table().name, "updated_at"),
    (companies_state.contact_company_table().name, "updated_at"),
}


def test_every_time_is_stored_in_whole_seconds_even_after_dagster_s_storage_is_imported(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    schema.create_tables(engine, load_column_map(None))
    for table in schema.staging_tables(load_column_map(None), dt.datetime(2026, 12, 3, 19, 0)):
        table.create(engine)
    state.ensure_table(engine)
    property_cache.ensure_table(engine)
    companies_state.ensure_tables(engine)
    with engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND DATA_TYPE = 'datetime'"
            )
        ).all()
    engine.dispose()
    assert {(table, column) for table, column, _ in columns} == TIMES
    assert {column_type for *_, column_type in columns} == {"datetime"}
