"""In-step retries: exponential backoff with jitter, bounded in attempts and in time.

tenacity does the looping; this module only fixes the policy so every caller (HubSpot
batches, Kaggle calls, MySQL connections and chunks, secret stores, the alert webhook) retries
the same way and logs each retry once. What is retried is `etl_assets.errors.classify`'s to say:
transient errors only. One still failing when the bounds run out is raised as it is, still
transient, so `failing_fast` leaves the step to its RetryPolicy (`assets/policies.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from etl_assets import settings as registry
from etl_assets.errors import is_transient

T = TypeVar("T")


@dataclass(frozen=True)
class RetrySettings:
    # Defaults from the settings registry; a run's values come from settings.retry_settings().
    attempts: int = registry.default_value(registry.RETRY_ATTEMPTS)
    max_seconds: float = registry.default_value(registry.RETRY_MAX_SECONDS)
    initial_delay: float = 0.5
    max_delay: float = 20.0


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    settings: RetrySettings,
    log: logging.Logger | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Call `fn` until it succeeds, raises an error `classify` calls permanent, or the bounds run out."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry and error is not None:
            on_retry(error)
        if log is not None:
            log.warning(
                "%s failed (attempt %d/%d, %s: %s); retrying in %.1fs",
                what,
                state.attempt_number,
                settings.attempts,
                type(error).__name__,
                error,
                state.upcoming_sleep,
            )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(settings.attempts) | tenacity.stop_after_delay(settings.max_seconds),
        wait=tenacity.wait_exponential_jitter(
            multiplier=settings.initial_delay, max=settings.max_delay, jitter=settings.initial_delay
        ),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
