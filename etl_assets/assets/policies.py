"""The step-level retry policy every asset carries (in-step retries are in `retrying`).

It applies to what `errors.failing_fast` lets leave retryable: the errors `errors.classify`
calls transient, once their in-step retries are spent. Permanent ones never reach it.
Built when the definitions load: a test that needs other bounds runs `dagster job execute`
in a process that sees its ETL_STEP_RETRIES / ETL_STEP_RETRY_DELAY_SECONDS.
"""

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
