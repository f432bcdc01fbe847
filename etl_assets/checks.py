"""Data-quality checks shown beside the assets in the UI and run with `daily_etl`.

Like the assets, they fail through `failing_fast`, so their errors reach the event log redacted.
"""

import dagster as dg
import sqlalchemy as sa

from etl_assets import settings
from etl_assets.assets import contacts_table, hubspot_contacts
from etl_assets.assets.companies import OFF, companies_enabled, hubspot_companies, hubspot_contact_companies
from etl_assets.contacts import schema
from etl_assets.contacts.records import CODE_COLUMN
from etl_assets.errors import failing_fast
from etl_assets.hubspot import companies_state, state
from etl_assets.resources.database import DatabaseResource


@dg.asset_check(
    asset=contacts_table,
    description="Share of source rows rejected by validation (at most ETL_MAX_REJECT_RATE, default 5%).",
)
def contacts_reject_rate(database: DatabaseResource) -> dg.AssetCheckResult:
    with failing_fast("contacts_reject_rate"):
        threshold = settings.float_setting(settings.MAX_REJECT_RATE)
        engine = database.engine
        schema.add_reason_codes(engine)  # a reject list from before the codes, if no load has run since
        with engine.connect() as conn:
            loads = schema.loads_table()
            last = conn.execute(sa.select(loads).order_by(loads.c.id.desc()).limit(1)).mappings().first()
            top = conn.execute(
                sa.text(
                    f"SELECT {CODE_COLUMN}, COUNT(*) AS n FROM {schema.REJECTED} GROUP BY {CODE_COLUMN} "
                    f"ORDER BY n DESC, {CODE_COLUMN} LIMIT 5"
                )
            ).all()
    rows_read = last["rows_read"] if last else 0
    rejected = last["rejected"] if last else 0
    rate = rejected / rows_read if rows_read else 0.0
    return dg.AssetCheckResult(
        passed=rate <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "reject_rate": dg.MetadataValue.float(round(rate, 4)),
            "rejected": dg.MetadataValue.int(rejected),
            "rows_read": dg.MetadataValue.int(rows_read),
            "threshold": dg.MetadataValue.float(threshold),
            "top_reasons": dg.MetadataValue.json({code: n for code, n in top}),  # by reason code
        },
    )


@dg.asset_check(
    asset=hubspot_contacts,
    description="Share of contacts HubSpot refused "
    "(at most HUBSPOT_MAX_FAILED_RATE, default 1%), with the top reasons.",
)
def hubspot_failed_rate(database: DatabaseResource) -> dg.AssetCheckResult:
    with failing_fast("hubspot_failed_rate"):
        threshold = settings.float_setting(settings.HUBSPOT_MAX_FAILED_RATE)
        engine = database.engine
        state.ensure_table(engine)
        with engine.connect() as conn:
            summary = state.failure_summary(conn)
    return _failed_rate_result(summary["failed"], "contacts", summary["contacts"], threshold, summary["top_reasons"])


def _failed_rate_result(failed: int, of: str, total: int, threshold: float, reasons: dict) -> dg.AssetCheckResult:
    rate = failed / total if total else 0.0
    return dg.AssetCheckResult(
        passed=rate <= threshold,
        metadata={
            "failed_rate": dg.MetadataValue.float(round(rate, 4)),
            "failed": dg.MetadataValue.int(failed),
            of: dg.MetadataValue.int(total),
            "threshold": dg.MetadataValue.float(threshold),
            "top_reasons": dg.MetadataValue.json(reasons),
        },
    )


def _company_failed_rate(name: str, table: sa.Table, database: DatabaseResource) -> dg.AssetCheckResult:
    """Share of `table`'s rows (companies or contacts' associations) whose last attempt failed."""
    with failing_fast(name):
        if not companies_enabled():
            return dg.AssetCheckResult(passed=True, metadata={"summary": OFF, "enabled": False})
        threshold = settings.float_setting(settings.HUBSPOT_MAX_FAILED_RATE)
        engine = database.engine
        companies_state.ensure_tables(engine)
        summary = companies_state.failure_summary(engine, table)
    return _failed_rate_result(summary["failed"], "rows", summary["rows"], threshold, summary["top_reasons"])


@dg.asset_check(
    asset=hubspot_companies,
    description="Share of companies HubSpot refused (at most HUBSPOT_MAX_FAILED_RATE), with the top reasons.",
)
def hubspot_companies_failed_rate(database: DatabaseResource) -> dg.AssetCheckResult:
    return _company_failed_rate("hubspot_companies_failed_rate", companies_state.company_state_table(), database)


@dg.asset_check(
    asset=hubspot_contact_companies,
    description="Share of contact-company associations HubSpot refused (at most HUBSPOT_MAX_FAILED_RATE).",
)
def hubspot_contact_companies_failed_rate(database: DatabaseResource) -> dg.AssetCheckResult:
    return _company_failed_rate(
        "hubspot_contact_companies_failed_rate", companies_state.contact_company_table(), database
    )
