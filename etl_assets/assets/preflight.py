"""`preflight_checks`: every check of etl_assets.preflight, as the asset upstream of kaggle_dataset.

Materialized alone it is the `preflight` job (a job and an asset cannot share a name in one
code location: its op would clash with the job's graph); in `daily_etl` it runs first (quick: see
etl_assets.preflight), and a failure stops the run before kaggle_dataset starts. It moves no
data: its materialization is the table of checks.
"""

import dagster as dg
from pydantic import Field

from etl_assets import preflight as checks
from etl_assets.assets.policies import step_retry_policy
from etl_assets.errors import failing_fast
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource
from etl_assets.resources.kaggle import KaggleResource
from etl_assets.resources.secrets import SecretsResource

PREFLIGHT_KEY = dg.AssetKey("preflight_checks")


class PreflightConfig(dg.Config):
    quick: bool = Field(
        default=False,
        description="daily_etl's own preflight: without the Kaggle requests (kaggle_dataset makes the same one "
        "first, before downloading) and the write-scope probe (the sync's first batch names a "
        "missing scope before anything is marked synced).",
    )


@dg.asset(
    group_name="contacts",
    kinds={"python"},
    retry_policy=step_retry_policy(),
    description="Checks, without moving data, what would fail the run later: secrets, Kaggle dataset, database "
    "login/privileges/local_infile, HubSpot token/scopes/properties. One table: check, result, "
    "what to change.",
)
def preflight_checks(
    context: dg.AssetExecutionContext,
    config: PreflightConfig,
    secrets: SecretsResource,
    kaggle: KaggleResource,
    database: DatabaseResource,
    hubspot: HubSpotResource,
) -> dg.MaterializeResult:
    log = context.log
    with failing_fast("preflight_checks"):
        rows = checks.run_checks(secrets, kaggle, database, hubspot, log, quick=config.quick)
        table = checks.markdown_table(rows)
        outcome = checks.summary(rows)
        log.info("Preflight%s: %s\n%s", " (quick)" if config.quick else "", outcome, checks.text_table(rows))
        # The table is kept whatever the outcome: a failed step has no materialization to carry it.
        context.log_event(
            dg.AssetObservation(
                asset_key=PREFLIGHT_KEY, metadata={"summary": outcome, "checks": dg.MetadataValue.md(table)}
            )
        )
        error = checks.verdict(rows)
        if error is not None:
            raise error
    return dg.MaterializeResult(
        metadata={
            "summary": outcome,
            "checks": dg.MetadataValue.md(table),
            "quick": config.quick,
            "warnings": dg.MetadataValue.int(sum(row.status == checks.WARN for row in rows)),
        },
        # The same version whenever it passes: a passing preflight does not make kaggle_dataset stale.
        data_version=dg.DataVersion("passed"),
    )
