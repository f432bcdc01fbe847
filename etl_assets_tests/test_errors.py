"""The error taxonomy: what a retry can fix, and what it cannot."""

import dagster as dg
import pymysql
import pytest
import requests
import urllib3
from hubspot.crm.contacts import ApiException
from sqlalchemy import exc as sa_exc

from etl_assets.errors import PermanentError, TransientError, exception_cause, failing_fast, is_transient
from etl_assets.logs.redaction import redact, register_secret


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


def raised(outer: Exception, inner: Exception, link: str) -> Exception:
    """`outer` raised while handling `inner`: `from None`, `from inner`, or implicitly."""
    try:
        try:
            raise inner
        except Exception as exc:
            if link == "from None":
                raise outer from None
            if link == "from":
                raise outer from exc
            raise outer
    except Exception as exc:
        return exc


@pytest.mark.parametrize("link, cause", [
    ("from None", ("PermanentError", "cannot read map.yaml")),  # the suppressed OSError is not the cause
    ("from", ("FileNotFoundError", "[Errno 2] no map.yaml")),
    ("implicitly", ("FileNotFoundError", "[Errno 2] no map.yaml")),
])
def test_the_cause_is_the_root_of_the_exception_chain(link, cause):
    error = raised(PermanentError("cannot read map.yaml"), FileNotFoundError(2, "no map.yaml"), link)
    assert exception_cause(error) == cause


def test_an_exception_without_a_message_has_its_class_as_cause():
    assert exception_cause(TimeoutError()) == ("TimeoutError", "")


def test_failing_fast_records_the_cause_redacted_in_the_failures_metadata():
    register_secret("map-SECRET-7070")
    with pytest.raises(dg.Failure) as failure:
        with failing_fast("contacts_table"):
            raise PermanentError("ETL_COLUMN_MAP: cannot read map-SECRET-7070.yaml")
    assert failure.value.description == "contacts_table: ETL_COLUMN_MAP: cannot read ***.yaml"
    assert not failure.value.allow_retries and failure.value.__suppress_context__
    metadata = {name: entry.value for name, entry in failure.value.metadata.items()}
    assert (metadata["error_class"], metadata["error"]) == ("PermanentError", "ETL_COLUMN_MAP: cannot read ***.yaml")


def test_failing_fast_describes_other_errors_by_their_root_cause_and_keeps_the_retry_policy():
    register_secret("pw-SECRET-8080")
    with pytest.raises(dg.Failure) as failure:
        with failing_fast("contacts_table"):
            try:
                raise ConnectionResetError("peer reset talking to mysql://etl:pw-SECRET-8080@db/etl")
            except ConnectionResetError as exc:
                raise RuntimeError("wrapper with the statement and its parameters") from exc
    assert failure.value.description == "contacts_table: ConnectionResetError: peer reset talking to mysql://etl:***@db/etl"
    assert failure.value.allow_retries and failure.value.__suppress_context__
    metadata = {name: entry.value for name, entry in failure.value.metadata.items()}
    assert metadata["error_class"] == "ConnectionResetError"
    assert "test_errors.py:" in metadata["traceback"] and "pw-SECRET" not in str(metadata)


@pytest.mark.parametrize(("text", "clean"), [
    ("mysql+pymysql://etl:S3cret@PW@db:3306/etl", "mysql+pymysql://etl:***@db:3306/etl"),
    ("GET https://storage.googleapis.com/b/archive.zip?X-Goog-Date=1&X-Goog-Signature=abc123ff&x=1",
     "GET https://storage.googleapis.com/b/archive.zip?X-Goog-Date=1&X-Goog-Signature=***&x=1"),
    ("hooks?token=abcd1234", "hooks?token=***"),
    ("Authorization: Bearer pat-na1-0a1b2c", "Authorization: Bearer ***"),
])
def test_credentials_of_a_known_shape_are_masked_unregistered(text, clean):
    assert redact(text) == clean
