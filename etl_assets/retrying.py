"""In-step retries: exponential backoff with jitter, bounded in attempts and in time.

tenacity does the looping; this module only fixes the policy so every caller (HubSpot
batches, Kaggle calls, MySQL chunks) retries the same way and logs each retry once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

from etl_assets.errors import is_transient

T = TypeVar("T")


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 6
    max_seconds: float = 180.0
    initial_delay: float = 0.5
    max_delay: float = 20.0


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    settings: RetrySettings,
    log: logging.Logger | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Call `fn` until it succeeds, a permanent error occurs, or the bounds run out."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry and error is not None:
            on_retry(error)
        if log is not None:
            log.warning(
                "%s failed (attempt %d/%d, %s: %s); retrying in %.1fs",
                what, state.attempt_number, settings.attempts, type(error).__name__,
                error, state.upcoming_sleep,
            )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(settings.attempts) | tenacity.stop_after_delay(settings.max_seconds),
        wait=tenacity.wait_exponential_jitter(
            multiplier=settings.initial_delay, max=settings.max_delay, jitter=settings.initial_delay),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
