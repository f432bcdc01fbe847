"""The step-level retry policy every asset carries (in-step retries are in `retrying`)."""

import dagster as dg

from etl_assets import settings


def step_retry_policy() -> dg.RetryPolicy:
    """Re-run a failed step, not the steps that succeeded; bounds from ETL_STEP_RETRIES and delay."""
    return dg.RetryPolicy(
        max_retries=settings.int_setting(settings.STEP_RETRIES),
        delay=settings.int_setting(settings.STEP_RETRY_DELAY),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )
