"""The daily schedule, RUNNING by default so a running daemon fires it without a click."""

import dagster as dg

from etl_assets import settings
from etl_assets.jobs import daily_etl


def daily_etl_schedule() -> dg.ScheduleDefinition:
    # Read when the code location loads: Dagster needs the cron before any run exists, and
    # rejects an invalid one there, naming it.
    cron = settings.setting(settings.SCHEDULE_CRON)
    timezone = settings.setting(settings.SCHEDULE_TZ)
    return dg.ScheduleDefinition(
        name="daily_etl_schedule",
        job=daily_etl,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"daily_etl at '{cron}' ({timezone}); set by {settings.SCHEDULE_CRON} / {settings.SCHEDULE_TZ}.",
    )
