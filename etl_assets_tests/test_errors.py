"""The error taxonomy: what a retry can fix, and what it cannot."""

import pymysql
import pytest
import requests
import urllib3
from hubspot.crm.contacts import ApiException
from sqlalchemy import exc as sa_exc

from etl_assets.errors import PermanentError, TransientError, is_transient


def http_error(status: int) -> requests.exceptions.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.exceptions.HTTPError("boom", response=response)


def db_error(code: int, message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, pymysql.err.OperationalError(code, message))


@pytest.mark.parametrize("error", [
    ConnectionResetError(), TimeoutError(), TransientError("x"),
    urllib3.exceptions.ProtocolError("Connection aborted."), urllib3.exceptions.ReadTimeoutError(None, "/", "t"),
    requests.exceptions.ConnectionError(), requests.exceptions.ChunkedEncodingError(),
    http_error(500), http_error(503), http_error(429), ApiException(status=502), ApiException(status=429),
    db_error(2006, "MySQL server has gone away"), db_error(2013, "Lost connection to MySQL server during query"),
    db_error(1213, "Deadlock found when trying to get lock"), db_error(1205, "Lock wait timeout exceeded"),
])
def test_transient(error):
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    PermanentError("x"), ValueError("bad"), http_error(401), http_error(403), http_error(404),
    ApiException(status=400), ApiException(status=401), ApiException(status=409),
    db_error(1045, "Access denied for user"), db_error(1146, "Table doesn't exist"),
    db_error(1054, "Unknown column"),
])
def test_permanent(error):
    assert not is_transient(error)
