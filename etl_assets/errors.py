"""The one failure rule: which errors a retry can fix, for every source, in one table.

Every error a run meets is classified once, here, by `classify`:

- TRANSIENT: the same call may succeed later (a connection dropped or refused, a timeout, HTTP
  5xx and 429, MySQL "gone away", lost connection, deadlock, lock wait timeout, a sealed Vault).
  `retrying.call_with_retries` retries it within the step; when those retries run out it is
  still transient, so `failing_fast` lets it leave the step retryable and the step's
  RetryPolicy (`assets/policies.py`) runs the step again later.
- PERMANENT: a retry would only repeat it (HTTP 4xx, a refused login, an unknown database, bad
  SQL, a certificate that does not verify, a bad file or setting). It is not retried in the
  step, and `failing_fast` fails the step at once (`dg.Failure(allow_retries=False)`) with a
  message a person can act on.

`_RULES` below is the table, one rule per source; the README's "What a run guarantees" shows
it as a matrix. An error no rule knows is judged by what it was raised from (its `__cause__`,
else its unsuppressed `__context__`), and is permanent when nothing in its chain is known: a
retry does not mend a bug. Code that rewords an error for a person (`reworded`) keeps its
class: TransientError or PermanentError, whichever `classify` says the original was.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import sqlite3
import ssl
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Literal

import dagster as dg
import pymysql
import requests
import urllib3.exceptions
from dagster_shared.error import SerializableErrorInfo  # ships with dagster
from sqlalchemy import exc as sa_exc

from etl_assets.logs.redaction import redact

Verdict = Literal["transient", "permanent"]
TRANSIENT: Verdict = "transient"
PERMANENT: Verdict = "permanent"

# MySQL/MariaDB client and server error codes worth retrying; every other code is permanent
# (1045 access denied, 1049 unknown database, 1064 bad SQL, 1146 no such table, ...).
_TRANSIENT_MYSQL_CODES = {
    1040,  # too many connections
    1205,  # lock wait timeout
    1213,  # deadlock
    1927,  # connection was killed (MariaDB)
    2002,  # can't connect through the socket (server restarting)
    2003,  # can't connect (server down or restarting, connection refused)
    2006,  # server has gone away
    2013,  # lost connection during query
    2014,  # commands out of sync after a dropped connection
    2055,  # lost connection (reading initial packet)
    4031,  # disconnected by the server for inactivity (MySQL 8)
}
# SQLite's primary result codes for another writer holding the file.
_SQLITE_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
# AWS error codes that mean "slow down", answered with 400 rather than 429.
_AWS_THROTTLING_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
}


class PermanentError(Exception):
    """A failure that no retry can fix; its message says what to change."""


class TransientError(Exception):
    """A failure worth retrying that is not an exception of a client library."""


def http_status_verdict(status: int | None) -> Verdict | None:
    """429 and 5xx are transient, every other 4xx permanent; None for no status (or a 1xx-3xx)."""
    if status is None or status < 400:
        return None
    return TRANSIENT if status == 429 or status >= 500 else PERMANENT


def http_status_is_transient(status: int | None) -> bool:
    return http_status_verdict(status) == TRANSIENT


def mysql_error_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


# The rules, one per source. Each says TRANSIENT or PERMANENT for the errors of its source, or
# None for an error it does not know. Client SDKs loaded only by one backend (hvac, Google,
# botocore) are looked up in sys.modules: an error of theirs can only exist once they are loaded.


def _ours(exc: BaseException) -> Verdict | None:
    if isinstance(exc, PermanentError):
        return PERMANENT
    if isinstance(exc, TransientError):
        return TRANSIENT
    if isinstance(exc, dg.Failure):
        return TRANSIENT if exc.allow_retries else PERMANENT
    return None


def _certificate_refused(exc: BaseException) -> bool:
    """A TLS certificate that does not verify, as PyMySQL wraps it (as "can't connect", 2003)."""
    orig = getattr(exc, "orig", exc)
    return isinstance(getattr(orig, "original_exception", None), ssl.SSLCertVerificationError)


def _database(exc: BaseException) -> Verdict | None:
    """MySQL/MariaDB (PyMySQL) and SQLite, raw or wrapped by SQLAlchemy."""
    if not isinstance(exc, (sa_exc.SQLAlchemyError, pymysql.err.MySQLError, sqlite3.Error)):
        return None
    if _certificate_refused(exc):  # no retry makes ETL_DATABASE_SSL_CA vouch for the server
        return PERMANENT
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return TRANSIENT
    if isinstance(exc, sa_exc.TimeoutError):  # no connection free in the pool in time
        return TRANSIENT
    orig = getattr(exc, "orig", exc)
    code = mysql_error_code(exc)
    if code is not None:
        return TRANSIENT if code in _TRANSIENT_MYSQL_CODES else PERMANENT
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int) and sqlite_code & 0xFF in _SQLITE_BUSY_CODES:
        return TRANSIENT
    return PERMANENT


def _hubspot(exc: BaseException) -> Verdict | None:
    """HubSpot: the client's answers (HubSpotApiError, the SDK's ApiException) by status.

    A 401 reaches here only after the token was read again (hubspot/client.py), so it stands.
    DAILY rate limit: permanent; it resets at midnight, after every step retry.
    """
    from etl_assets.hubspot.errors import (
        HubSpotApiError,  # not at the top: settings imports this module
    )
    from etl_assets.hubspot.ratelimit import DailyLimitReached

    if isinstance(exc, DailyLimitReached):
        return PERMANENT
    if isinstance(exc, HubSpotApiError):
        return http_status_verdict(exc.error.status) or PERMANENT
    status = getattr(exc, "status", None)  # hubspot's ApiException and friends
    if type(exc).__module__.startswith("hubspot.") and isinstance(status, int) and status > 0:
        return http_status_verdict(status) or PERMANENT
    return None


def _http(exc: BaseException) -> Verdict | None:
    """requests (Kaggle, Cloud Storage downloads, the alert webhook, Vault, Google) and urllib3 (HubSpot)."""
    if isinstance(exc, requests.exceptions.HTTPError):
        response = exc.response
        return http_status_verdict(response.status_code if response is not None else None) or PERMANENT
    if isinstance(exc, requests.exceptions.SSLError):  # before ConnectionError, its base
        return PERMANENT
    if isinstance(
        exc,
        (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError),
    ):
        return TRANSIENT
    if isinstance(exc, requests.exceptions.RequestException):  # an invalid URL, too many redirects...
        return PERMANENT
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and isinstance(exc.reason, urllib3.exceptions.SSLError):
        return PERMANENT
    if isinstance(exc, urllib3.exceptions.SSLError):
        return PERMANENT
    if isinstance(exc, urllib3.exceptions.HTTPError):  # ProtocolError, MaxRetryError, timeouts
        return TRANSIENT
    if isinstance(exc, http.client.IncompleteRead):
        return TRANSIENT
    return None


def _secret_stores(exc: BaseException) -> Verdict | None:
    """hvac (Vault/OpenBao), google-api-core and google-auth (Secret Manager), botocore (AWS)."""
    vault = sys.modules.get("hvac.exceptions")
    if vault is not None and isinstance(exc, vault.VaultError):
        # 503 sealed/standby, 429, 500, 502: the server's state; 400, 401, 403, 404, 412...: ours
        transient = (vault.VaultDown, vault.RateLimitExceeded, vault.InternalServerError, vault.BadGateway)
        return TRANSIENT if isinstance(exc, transient) else PERMANENT
    google = sys.modules.get("google.api_core.exceptions")
    if google is not None:
        if isinstance(exc, google.RetryError):  # 429/503 until the client's own retry deadline
            return TRANSIENT
        if isinstance(exc, google.GoogleAPICallError):
            return http_status_verdict(exc.code if isinstance(exc.code, int) else None) or PERMANENT
    google_auth = sys.modules.get("google.auth.exceptions")
    if google_auth is not None:
        if isinstance(exc, google_auth.RefreshError):  # credentials refused, e.g. a deleted key
            return PERMANENT
        if isinstance(exc, google_auth.TransportError):  # the token endpoint unreachable
            return TRANSIENT
    boto = sys.modules.get("botocore.exceptions")
    if boto is not None:
        if isinstance(exc, boto.ClientError):
            error = exc.response.get("Error", {})
            if error.get("Code") in _AWS_THROTTLING_CODES:
                return TRANSIENT
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return http_status_verdict(status if isinstance(status, int) else None) or PERMANENT
        if isinstance(exc, (boto.ConnectionError, boto.HTTPClientError)):  # unreachable, timeouts, drops
            return TRANSIENT
        if isinstance(exc, boto.BotoCoreError):  # no credentials or region, a bad endpoint: configuration
            return PERMANENT
    return None


def _network(exc: BaseException) -> Verdict | None:
    """The standard library's: sockets and TLS, whatever client raised them."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PERMANENT
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)):
        return TRANSIENT
    return None


# (source, rule), in the order they are asked: the first that knows an error decides.
_RULES: tuple[tuple[str, Callable[[BaseException], Verdict | None]], ...] = (
    ("ours: PermanentError, TransientError, dg.Failure", _ours),
    ("database: MySQL/MariaDB, SQLite, SQLAlchemy", _database),
    ("HubSpot", _hubspot),
    ("HTTP: Kaggle, downloads, alert webhook", _http),
    ("secret stores: Vault, Google, AWS", _secret_stores),
    ("network", _network),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (`__cause__`, else an unsuppressed `__context__`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def classify(exc: BaseException) -> Verdict:
    """TRANSIENT or PERMANENT: the one failure rule (see the module's docstring)."""
    for error in _chain(exc):
        for _source, rule in _RULES:
            verdict = rule(error)
            if verdict is not None:
                return verdict
    return PERMANENT


def is_transient(exc: BaseException) -> bool:
    return classify(exc) == TRANSIENT


def reworded(exc: BaseException, message: str) -> Exception:
    """`message` (for a person) as TransientError or PermanentError, as `classify` judges `exc`.

    Raise it `from None`: the original's chain carries URLs, bodies or SQL, not needed.
    """
    return TransientError(message) if is_transient(exc) else PermanentError(message)


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
    """The boundary every step's errors leave through: a dg.Failure, retryable as `classify` says.

    A transient error (its in-step retries spent) leaves retryable, so the step's RetryPolicy
    runs the step again; a permanent one fails the step at once (`allow_retries=False`). Either
    way the text is redacted here: Dagster stores a step's error (message, chain and all) in the
    event log, shows it in the UI and hands it to the run process and the alert sensor, which
    know no secrets. A PermanentError is described by its own message (written for a person);
    anything else by its root cause (a database error by the driver's message,
    not SQLAlchemy's copy of the statement and its parameters). Raised `from None`, the Failure
    carries no chain; the root cause and the frames it came from go into its metadata.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error leaves redacted, retryable as classify says
        permanent = classify(exc) == PERMANENT
        error_class, error = exception_cause(exc)
        raise dg.Failure(
            description=(
                redact(f"{what}: {exc}") if isinstance(exc, PermanentError) else f"{what}: {error_class}: {error}"
            ),
            allow_retries=not permanent,
            metadata={"error_class": error_class, "error": error, "traceback": _frames(exc)},
        ) from None
