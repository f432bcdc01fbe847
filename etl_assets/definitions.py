"""The code location: the preflight, the assets (companies opt-in), their checks, the jobs, schedule and sensor."""

import dagster as dg

from etl_assets.assets import PIPELINE
from etl_assets.checks import (
    contacts_reject_rate,
    hubspot_companies_failed_rate,
    hubspot_contact_companies_failed_rate,
    hubspot_failed_rate,
)
from etl_assets.jobs import daily_etl, preflight_job
from etl_assets.logs.handlers import json_console_logger
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource
from etl_assets.resources.kaggle import KaggleResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets.schedules import daily_etl_schedule
from etl_assets.sensors import run_failure_alert

secrets = SecretsResource()

defs = dg.Definitions(
    assets=PIPELINE,
    asset_checks=[
        contacts_reject_rate,
        hubspot_failed_rate,
        hubspot_companies_failed_rate,
        hubspot_contact_companies_failed_rate,
    ],
    jobs=[daily_etl, preflight_job],
    schedules=[daily_etl_schedule()],
    sensors=[run_failure_alert],
    resources={
        "secrets": secrets,
        "kaggle": KaggleResource(secrets=secrets),
        "database": DatabaseResource(secrets=secrets),
        "hubspot": HubSpotResource(secrets=secrets),
    },
    # JSON lines on stderr in place of Dagster's coloured text (etl_assets/logs/handlers.py).
    loggers={"console": json_console_logger},
)
