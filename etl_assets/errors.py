"""One place that decides which failures a retry can fix.

Transient: the same call may succeed later (connection drops, timeouts, HTTP 5xx and 429,
MySQL "gone away", lost connection, deadlock, lock wait timeout). Everything else is
permanent: a retry would only repeat it, so the step fails at once with a message a person
can act on (`dg.Failure(allow_retries=False)`).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Iterator

import dagster as dg
import requests
import urllib3.exceptions
from sqlalchemy import exc as sa_exc

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


@contextlib.contextmanager
def failing_fast(what: str) -> Iterator[None]:
    """Turn a PermanentError into a Failure that Dagster's step retries do not repeat."""
    try:
        yield
    except PermanentError as exc:
        raise dg.Failure(description=f"{what}: {exc}", allow_retries=False) from None
