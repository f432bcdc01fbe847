"""One place that decides which failures a retry can fix.

Transient: the same call may succeed later (connection drops, timeouts, HTTP 5xx and 429,
MySQL "gone away", lost connection, deadlock, lock wait timeout). Everything else is
permanent: a retry would only repeat it, so the step fails at once with a message a person
can act on (`dg.Failure(allow_retries=False)`).
"""

from __future__ import annotations

import contextlib
import socket
import traceback
from typing import Any, Iterator

import dagster as dg
import requests
import urllib3.exceptions
from dagster_shared.error import SerializableErrorInfo  # what Dagster records errors as; ships with dagster
from sqlalchemy import exc as sa_exc

from etl_assets.logs.redaction import redact

# MySQL/MariaDB client and server error codes worth retrying.
_TRANSIENT_MYSQL_CODES = {
    1040,  # too many connections
    1205,  # lock wait timeout
    1213,  # deadlock
    1927,  # connection was killed (MariaDB)
    2003,  # can't connect (server restarting)
    2006,  # server has gone away
    2013,  # lost connection during query
    2014,  # commands out of sync after a dropped connection
    2055,  # lost connection (reading initial packet)
}


class PermanentError(Exception):
    """A failure that no retry can fix; its message says what to change."""


class TransientError(Exception):
    """A failure worth retrying that is not an exception of a client library."""


def http_status_is_transient(status: int | None) -> bool:
    return status is not None and (status == 429 or status >= 500)


def mysql_error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
        return True
    if isinstance(exc, urllib3.exceptions.HTTPError):  # ProtocolError, MaxRetryError, timeouts
        return True
    if isinstance(exc, requests.exceptions.HTTPError):
        response = exc.response
        return http_status_is_transient(response.status_code if response is not None else None)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        return True
    status = getattr(exc, "status", None)  # hubspot ApiException and friends
    if isinstance(status, int) and status > 0:
        return http_status_is_transient(status)
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return mysql_error_code(exc) in _TRANSIENT_MYSQL_CODES
    return False


def root_cause(error: SerializableErrorInfo) -> tuple[str, str]:
    """Class name and redacted message of the exception at the bottom of `error`'s chain.

    What Dagster 1.13 records as a step event's `error`:
    - an exception under a RetryPolicy: RetryRequestedFromPolicy (message "Exceeded max_retries
      of N" at exhaustion) whose `.cause` is the exception, on each STEP_UP_FOR_RETRY and the
      STEP_FAILURE alike; without a policy, DagsterExecutionStepExecutionError ("Error occurred
      while executing op ...") with the same `.cause`;
    - a dg.Failure: the Failure itself; raised `from None` (failing_fast) it has no cause, so
      the error it replaced survives only in its metadata (see failure_cause);
    - `raise X from None`: X with neither `.cause` nor `.context` (suppressed context is dropped).
    So the root is found by following `.cause`, else `.context`, to the end, whatever wraps it;
    the chain is finite (traceback drops cycles). Messages read "module.Class: text".
    """
    while (deeper := error.cause or error.context) is not None:
        error = deeper
    name, message = error.cls_name or "Error", error.message.strip()
    qualified, _, text = message.partition(": ")
    if qualified.rsplit(".", 1)[-1] != name:  # no "module.Class: " prefix: a message Dagster wrote
        text = message
    return name, redact(text)


def exception_cause(exc: BaseException) -> tuple[str, str]:
    """root_cause of a live exception, read the way Dagster reads it."""
    return root_cause(SerializableErrorInfo.from_traceback(traceback.TracebackException.from_exception(exc)))


def failure_cause(data: Any) -> tuple[str, str] | None:
    """The root cause of a failure event (its event_specific_data), or None when it carries no error."""
    first_step_failure = getattr(data, "first_step_failure_event", None)
    if first_step_failure is not None:  # a run's failure: the cause of its first failed step
        return failure_cause(first_step_failure.event_specific_data)
    failure = getattr(data, "user_failure_data", None)
    metadata = (failure.metadata or {}) if failure is not None else {}
    if "error_class" in metadata and "error" in metadata:  # failing_fast's, redacted where it was raised
        return metadata["error_class"].value, metadata["error"].value
    error = getattr(data, "error", None)
    return root_cause(error) if error is not None else None


# How many of the innermost frames of a failure's traceback its metadata keeps.
TRACEBACK_FRAMES = 12


def _frames(exc: BaseException) -> str:
    """Where the error happened: file, line and function of each frame, never a value."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    return "\n".join(f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames)


@contextlib.contextmanager
def failing_fast(what: str) -> Iterator[None]:
    """Every error leaving a step as a dg.Failure whose text is redacted where it is raised.

    Dagster stores a step's error (message, chain and all) in the event log, shows it in the UI
    and hands it to the run process and the alert sensor, which know no secrets: so it is made
    clean here. A PermanentError fails at once with its own message; anything else keeps the
    step's RetryPolicy and is described by its root cause (a database error by the driver's
    message, not SQLAlchemy's copy of the statement and its parameters). Raised `from None`, the
    Failure carries no chain; the root cause and the frames it came from go into its metadata.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error leaves redacted; Dagster still retries the transient
        permanent = isinstance(exc, PermanentError)
        error_class, error = exception_cause(exc)
        raise dg.Failure(
            description=redact(f"{what}: {exc}") if permanent else f"{what}: {error_class}: {error}",
            allow_retries=not permanent,
            metadata={"error_class": error_class, "error": error, "traceback": _frames(exc)},
        ) from None
