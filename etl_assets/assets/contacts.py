"""`contacts_table`: the source CSV, validated and de-duplicated, upserted into `contacts`."""

import logging
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from etl_assets import settings
from etl_assets.assets.kaggle import kaggle_dataset
from etl_assets.assets.policies import step_retry_policy
from etl_assets.contacts import schema
from etl_assets.contacts.loader import DEFAULT_CHUNK_ROWS, LoadReport, LoadRules, load_contacts
from etl_assets.contacts.mapping import ColumnMap, load_column_map
from etl_assets.contacts.source import FileScan
from etl_assets.contacts.staging import choose_writer
from etl_assets.dataset import read_manifest
from etl_assets.errors import PermanentError, failing_fast
from etl_assets.resources.database import DatabaseResource
from etl_assets.retrying import RetrySettings
from etl_assets.text import preview_markdown

LOAD_LOCK = "etl_assets.contacts_table"


def _preview(engine: sa.Engine, rows: int = 5) -> str:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {schema.CONTACTS} ORDER BY email LIMIT {rows}"), conn)
    return preview_markdown(frame)


def load_source(
    database: DatabaseResource,
    csv_path: Path,
    column_map: ColumnMap,
    retry: RetrySettings,
    run_id: str,
    log: logging.Logger,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    rules: LoadRules | None = None,
    scan: FileScan | None = None,
) -> LoadReport:
    """The step's work once its inputs are known (benchmarks/ time this very function, without `scan`:
    the file is scanned here then)."""
    rules = rules or LoadRules.from_settings()  # a bad setting fails before the database is asked
    database.check_connection(retry, log)
    writer = choose_writer(database.staging_engine, log)
    with database.exclusive(LOAD_LOCK):
        return load_contacts(
            database.engine,
            csv_path,
            column_map,
            writer,
            run_id,
            log,
            retry,
            chunk_rows=chunk_rows,
            rules=rules,
            staging_engine=database.staging_engine,
            scan=scan,
        )


@dg.asset(
    deps=[kaggle_dataset],
    group_name="contacts",
    kinds={"mysql", "table"},
    pool="etl_assets_contacts_load",
    retry_policy=step_retry_policy(),
    description="Validated, de-duplicated contacts, unique by email, in the `contacts` table; rejected rows "
    "with their reasons in `contacts_rejected`.",
)
def contacts_table(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    log = context.log
    with failing_fast("contacts_table"):
        source = read_manifest(settings.data_dir())
        if source is None:
            raise PermanentError("no source file: materialize kaggle_dataset first")
        column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
        if database.is_default():
            log.info("Database: no ETL_DATABASE_URL, using SQLite at %s", database.describe())
        rules = LoadRules.from_settings()
        # kaggle_dataset scanned (and hashed) the file: its scan, while the file is unchanged
        report = load_source(
            database,
            Path(source.path),
            column_map,
            settings.retry_settings(),
            context.run.run_id,
            log,
            rules=rules,
            scan=source.scan(rules.csv),
        )
    engine = database.engine
    rate = report.rows_read / report.seconds if report.seconds else 0
    return dg.MaterializeResult(
        metadata={
            "summary": (
                f"{report.rows_read:,} rows read: {report.inserted:,} inserted, {report.updated:,} updated, "
                f"{report.unchanged:,} unchanged, {report.deleted:,} deleted, {report.rejected:,} rejected; "
                f"{report.contacts_after:,} contacts in {schema.CONTACTS}"
            ),
            "table": schema.CONTACTS,
            "database": database.describe(),
            "source": f"{source.dataset} version {source.version}, {source.file}",
            "rows_read": dg.MetadataValue.int(report.rows_read),
            "inserted": dg.MetadataValue.int(report.inserted),
            "updated": dg.MetadataValue.int(report.updated),
            "unchanged": dg.MetadataValue.int(report.unchanged),
            "deleted": dg.MetadataValue.int(report.deleted),
            "rejected": dg.MetadataValue.int(report.rejected),
            "row_count": dg.MetadataValue.int(report.contacts_after),
            "dagster/row_count": dg.MetadataValue.int(report.contacts_after),
            "skipped_identical_source": report.skipped_identical_source,
            "load_path": report.writer,
            "applied_by": report.applied_by or "nothing to apply (identical source)",
            "rows_per_second": round(rate),
            "preview": dg.MetadataValue.md(_preview(engine)),
        },
        data_version=dg.DataVersion(f"{source.sha256[:16]}-{column_map.fingerprint()}"),
    )
