"""The one failure rule (etl_assets.errors.classify), source by source: what a retry can fix, and what it cannot.

Each source's errors are built the way its client raises them; test_failure_rule.py meets the
same errors from the real servers and clients.
"""

import json
import socket
import ssl

import botocore.exceptions
import dagster as dg
import google.api_core.exceptions as google_api
import google.auth.exceptions as google_auth
import hvac.exceptions
import pymysql
import pytest
import requests
import sqlalchemy as sa
import urllib3
from hubspot.crm.contacts import ApiException
from sqlalchemy import exc as sa_exc

from etl_assets.errors import (
    PERMANENT,
    TRANSIENT,
    PermanentError,
    TransientError,
    classify,
    exception_cause,
    failing_fast,
    is_transient,
    reworded,
)
from etl_assets.hubspot.errors import HubSpotApiError, parse_error
from etl_assets.hubspot.ratelimit import DailyLimitReached
from etl_assets.logs.redaction import redact, register_secret
from etl_assets.retrying import RetrySettings, call_with_retries

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


def http_error(
    status: int, url: str = "https://www.kaggle.com/api/v1/datasets.DatasetApiService/GetDataset"
) -> requests.exceptions.HTTPError:
    """As requests' raise_for_status raises it (Kaggle's client, the alert webhook)."""
    response = requests.Response()
    response.status_code, response.url, response.reason = status, url, "Boom"
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        return exc
    raise AssertionError(f"{status} raised nothing")


def db_error(code: int, message: str, kind=pymysql.err.OperationalError) -> sa_exc.DBAPIError:
    """As SQLAlchemy wraps PyMySQL's error (the class PyMySQL picks for the code)."""
    return sa_exc.DBAPIError.instance("SELECT 1", {}, kind(code, message), pymysql.err.Error)


def certificate_refused() -> sa_exc.DBAPIError:
    """PyMySQL's "can't connect" (2003) for a server certificate that does not verify, as it raises it."""
    error = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db' (CERTIFICATE_VERIFY_FAILED)")
    error.original_exception = ssl.SSLCertVerificationError(1, "certificate verify failed")
    return sa_exc.DBAPIError.instance("SELECT 1", {}, error, pymysql.err.Error)


def hubspot_error(status: int, category: str = "VALIDATION_ERROR") -> HubSpotApiError:
    """As hubspot/client.py raises it for an error answer (not a 429)."""
    body = json.dumps({"status": "error", "category": category, "message": "Property values were not valid"})
    return HubSpotApiError(parse_error(status, body))


def aws_client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetSecretValue"
    )


# The matrix of the README ("What a run guarantees"), source by source: (source, error, verdict).
MATRIX = [
    # ours
    ("ours", TransientError("x"), TRANSIENT),
    ("ours", PermanentError("x"), PERMANENT),
    ("ours", dg.Failure("x", allow_retries=False), PERMANENT),
    ("ours", ValueError("a bug"), PERMANENT),
    ("ours", KeyError("a bug"), PERMANENT),
    # Kaggle (requests, through kagglesdk and the download)
    ("kaggle", http_error(500), TRANSIENT),
    ("kaggle", http_error(503), TRANSIENT),
    ("kaggle", http_error(429), TRANSIENT),
    ("kaggle", http_error(400), PERMANENT),
    ("kaggle", http_error(401), PERMANENT),
    ("kaggle", http_error(403), PERMANENT),
    ("kaggle", http_error(404), PERMANENT),
    ("kaggle", requests.exceptions.ConnectionError("Connection aborted."), TRANSIENT),
    ("kaggle", requests.exceptions.ReadTimeout("read timed out"), TRANSIENT),
    ("kaggle", requests.exceptions.ChunkedEncodingError("IncompleteRead"), TRANSIENT),
    ("kaggle", requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), PERMANENT),
    # database: MySQL/MariaDB through PyMySQL and SQLAlchemy
    (
        "database",
        db_error(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"),
        TRANSIENT,
    ),
    ("database", db_error(2006, "MySQL server has gone away"), TRANSIENT),
    ("database", db_error(2013, "Lost connection to MySQL server during query"), TRANSIENT),
    ("database", db_error(1040, "Too many connections"), TRANSIENT),
    ("database", db_error(1205, "Lock wait timeout exceeded; try restarting transaction"), TRANSIENT),
    ("database", db_error(1213, "Deadlock found when trying to get lock; try restarting transaction"), TRANSIENT),
    ("database", db_error(1045, "Access denied for user 'etl'@'localhost' (using password: YES)"), PERMANENT),
    ("database", db_error(1049, "Unknown database 'etl'"), PERMANENT),
    ("database", db_error(1064, "You have an error in your SQL syntax", pymysql.err.ProgrammingError), PERMANENT),
    ("database", db_error(1146, "Table 'etl.contacts' doesn't exist", pymysql.err.ProgrammingError), PERMANENT),
    ("database", db_error(1054, "Unknown column 'x' in 'field list'"), PERMANENT),
    ("database", db_error(1406, "Data too long for column 'city'", pymysql.err.DataError), PERMANENT),
    ("database", certificate_refused(), PERMANENT),
    ("database", pymysql.err.OperationalError(2013, "Lost connection"), TRANSIENT),  # raw, on the staging path
    ("database", sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"), TRANSIENT),
    # HubSpot: our client's HubSpotApiError, the SDK's ApiException, urllib3 below it
    ("hubspot", hubspot_error(400), PERMANENT),
    ("hubspot", hubspot_error(401, "INVALID_AUTHENTICATION"), PERMANENT),  # after the token was read again
    ("hubspot", hubspot_error(403, "MISSING_SCOPES"), PERMANENT),
    ("hubspot", hubspot_error(404, "OBJECT_NOT_FOUND"), PERMANENT),
    ("hubspot", hubspot_error(409, "CONFLICT"), PERMANENT),
    ("hubspot", hubspot_error(500, "INTERNAL_ERROR"), TRANSIENT),
    ("hubspot", hubspot_error(502, "HTTP_502"), TRANSIENT),
    ("hubspot", hubspot_error(503, "HTTP_503"), TRANSIENT),
    ("hubspot", DailyLimitReached("You have reached your daily limit."), PERMANENT),
    ("hubspot", ApiException(status=502), TRANSIENT),
    ("hubspot", ApiException(status=429), TRANSIENT),
    ("hubspot", ApiException(status=400), PERMANENT),
    ("hubspot", ApiException(status=401), PERMANENT),
    ("hubspot", urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")), TRANSIENT),
    (
        "hubspot",
        urllib3.exceptions.ReadTimeoutError(None, "/crm/v3/objects/contacts/batch/upsert", "timed out"),
        TRANSIENT,
    ),
    (
        "hubspot",
        urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.NewConnectionError(None, "refused")),
        TRANSIENT,
    ),
    (
        "hubspot",
        urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")),
        PERMANENT,
    ),
    # secret stores
    ("vault", hvac.exceptions.VaultDown("Vault is sealed"), TRANSIENT),
    ("vault", hvac.exceptions.RateLimitExceeded("rate limited"), TRANSIENT),
    ("vault", hvac.exceptions.InternalServerError("internal"), TRANSIENT),
    ("vault", hvac.exceptions.BadGateway("bad gateway"), TRANSIENT),
    ("vault", hvac.exceptions.Forbidden("permission denied"), PERMANENT),
    ("vault", hvac.exceptions.InvalidPath("not found"), PERMANENT),
    ("vault", hvac.exceptions.InvalidRequest("bad request"), PERMANENT),
    ("vault", hvac.exceptions.Unauthorized("unauthorized"), PERMANENT),
    ("gcp", google_api.ServiceUnavailable("unavailable"), TRANSIENT),
    ("gcp", google_api.TooManyRequests("quota"), TRANSIENT),
    ("gcp", google_api.InternalServerError("internal"), TRANSIENT),
    ("gcp", google_api.RetryError("deadline", google_api.ServiceUnavailable("x")), TRANSIENT),
    ("gcp", google_api.Forbidden("PERMISSION_DENIED"), PERMANENT),
    ("gcp", google_api.NotFound("no secret"), PERMANENT),
    ("gcp", google_api.BadRequest("FAILED_PRECONDITION"), PERMANENT),
    ("gcp", google_auth.RefreshError("invalid_grant"), PERMANENT),
    ("gcp", google_auth.TransportError("metadata server unreachable"), TRANSIENT),
    ("aws", aws_client_error("ThrottlingException", 400), TRANSIENT),
    ("aws", aws_client_error("InternalServiceError", 500), TRANSIENT),
    ("aws", aws_client_error("AccessDeniedException", 400), PERMANENT),
    ("aws", aws_client_error("DecryptionFailure", 400), PERMANENT),
    ("aws", botocore.exceptions.EndpointConnectionError(endpoint_url="https://secretsmanager"), TRANSIENT),
    ("aws", botocore.exceptions.ReadTimeoutError(endpoint_url="https://secretsmanager"), TRANSIENT),
    ("aws", botocore.exceptions.NoCredentialsError(), PERMANENT),
    ("aws", botocore.exceptions.NoRegionError(), PERMANENT),
    # alert webhook (requests)
    ("webhook", http_error(503, "https://hooks.slack.com/services/T/B/x"), TRANSIENT),
    ("webhook", http_error(429, "https://hooks.slack.com/services/T/B/x"), TRANSIENT),
    ("webhook", http_error(404, "https://hooks.slack.com/services/T/B/x"), PERMANENT),
    ("webhook", requests.exceptions.ConnectTimeout("connect timed out"), TRANSIENT),
    # the network, whatever client
    ("network", ConnectionResetError(104, "Connection reset by peer"), TRANSIENT),
    ("network", ConnectionRefusedError(111, "Connection refused"), TRANSIENT),
    ("network", TimeoutError(), TRANSIENT),
    ("network", socket.gaierror(-3, "Temporary failure in name resolution"), TRANSIENT),
    ("network", ssl.SSLCertVerificationError(1, "certificate verify failed"), PERMANENT),
]


@pytest.mark.parametrize(
    ("source", "error", "verdict"),
    MATRIX,
    ids=[f"{source}-{type(error).__name__}-{i}" for i, (source, error, _) in enumerate(MATRIX)],
)
def test_each_sources_errors_are_classified_by_the_one_rule(source, error, verdict):
    assert classify(error) == verdict
    assert is_transient(error) == (verdict == TRANSIENT)


def test_a_sqlite_lock_is_transient_and_other_sqlite_errors_permanent(tmp_path):
    """Real SQLite errors through SQLAlchemy: another writer holding the file, and bad SQL."""
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    holder = sa.create_engine(url)
    waiter = sa.create_engine(url, connect_args={"timeout": 0})
    with holder.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.commit()
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        with pytest.raises(sa_exc.OperationalError) as locked, waiter.connect() as other:
            other.exec_driver_sql("INSERT INTO t VALUES (1)")
        conn.rollback()
    assert "database is locked" in str(locked.value) and classify(locked.value) == TRANSIENT
    with pytest.raises(sa_exc.OperationalError) as bad, waiter.connect() as other:
        other.exec_driver_sql("SELEC 1")
    assert classify(bad.value) == PERMANENT


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (db_error(2003, "Can't connect"), TransientError),
        (db_error(1045, "Access denied"), PermanentError),
        (http_error(503), TransientError),
        (http_error(404), PermanentError),
        (hubspot_error(400), PermanentError),
        (hubspot_error(502), TransientError),
    ],
)
def test_a_reworded_error_keeps_its_verdict(error, kind):
    reworded_error = reworded(error, "said for a person")
    assert type(reworded_error) is kind and str(reworded_error) == "said for a person"


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (hubspot_error(400), False),
        (hubspot_error(503), True),
        (DailyLimitReached("daily"), False),
        (db_error(2003, "Can't connect"), True),
        (db_error(1213, "Deadlock found"), True),
        (db_error(1045, "Access denied"), False),
        (db_error(1064, "SQL syntax", pymysql.err.ProgrammingError), False),
        (certificate_refused(), False),
        (http_error(503), True),
        (http_error(404), False),
        (TransientError("x"), True),
        (PermanentError("x"), False),
        (ValueError("a bug"), False),
    ],
)
def test_failing_fast_lets_only_transient_errors_reach_the_step_retry_policy(error, retryable):
    with pytest.raises(dg.Failure) as failure, failing_fast("step"):
        raise error
    assert failure.value.allow_retries is retryable


@pytest.mark.parametrize(
    ("error", "calls"),
    [
        (db_error(2006, "gone away"), 3),
        (hubspot_error(502), 3),
        (http_error(429), 3),
        (hubspot_error(400), 1),
        (db_error(1045, "Access denied"), 1),
        (http_error(404), 1),
    ],
)
def test_in_step_retries_retry_transient_errors_only(error, calls):
    quick = RetrySettings(attempts=3, max_seconds=5, initial_delay=0.01, max_delay=0.01)
    made = []

    def fail():
        made.append(1)
        raise error

    with pytest.raises(type(error)):
        call_with_retries(fail, "x", quick)
    assert len(made) == calls


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
            raise outer  # noqa: B904 - the implicit context is the case under test
    except Exception as exc:  # noqa: BLE001 - the test wants whichever was raised
        return exc


@pytest.mark.parametrize(
    "link, cause",
    [
        ("from None", ("PermanentError", "cannot read map.yaml")),  # the suppressed OSError is not the cause
        ("from", ("FileNotFoundError", "[Errno 2] no map.yaml")),
        ("implicitly", ("FileNotFoundError", "[Errno 2] no map.yaml")),
    ],
)
def test_the_cause_is_the_root_of_the_exception_chain(link, cause):
    error = raised(PermanentError("cannot read map.yaml"), FileNotFoundError(2, "no map.yaml"), link)
    assert exception_cause(error) == cause


def test_an_exception_without_a_message_has_its_class_as_cause():
    assert exception_cause(TimeoutError()) == ("TimeoutError", "")


def test_failing_fast_records_the_cause_redacted_in_the_failures_metadata():
    register_secret("map-SECRET-7070")
    with pytest.raises(dg.Failure) as failure, failing_fast("contacts_table"):
        raise PermanentError("ETL_COLUMN_MAP: cannot read map-SECRET-7070.yaml")
    assert failure.value.description == "contacts_table: ETL_COLUMN_MAP: cannot read ***.yaml"
    assert not failure.value.allow_retries and failure.value.__suppress_context__
    metadata = {name: entry.value for name, entry in failure.value.metadata.items()}
    assert (metadata["error_class"], metadata["error"]) == ("PermanentError", "ETL_COLUMN_MAP: cannot read ***.yaml")


def test_failing_fast_describes_other_errors_by_their_root_cause_and_keeps_the_retry_policy():
    register_secret("pw-SECRET-8080")
    with pytest.raises(dg.Failure) as failure, failing_fast("contacts_table"):
        try:
            raise ConnectionResetError("peer reset talking to mysql://etl:pw-SECRET-8080@db/etl")
        except ConnectionResetError as exc:
            raise RuntimeError("wrapper with the statement and its parameters") from exc
    assert (
        failure.value.description
        == "contacts_table: ConnectionResetError: peer reset talking to mysql://etl:***@db/etl"
    )
    assert failure.value.allow_retries and failure.value.__suppress_context__
    metadata = {name: entry.value for name, entry in failure.value.metadata.items()}
    assert metadata["error_class"] == "ConnectionResetError"
    assert "test_errors.py:" in metadata["traceback"] and "pw-SECRET" not in str(metadata)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("mysql+pymysql://etl:S3cret@PW@db:3306/etl", "mysql+pymysql://etl:***@db:3306/etl"),
        (
            "GET https://storage.googleapis.com/b/archive.zip?X-Goog-Date=1&X-Goog-Signature=abc123ff&x=1",
            "GET https://storage.googleapis.com/b/archive.zip?X-Goog-Date=1&X-Goog-Signature=***&x=1",
        ),
        ("hooks?token=abcd1234", "hooks?token=***"),
        ("Authorization: Bearer pat-na1-0a1b2c", "Authorization: Bearer ***"),
    ],
)
def test_credentials_of_a_known_shape_are_masked_unregistered(text, clean):
    assert redact(text) == clean


def test_an_unknown_error_is_judged_by_what_it_was_raised_from():
    assert classify(raised(RuntimeError("wrapper"), ConnectionResetError(), "from")) == TRANSIENT
    assert classify(raised(RuntimeError("wrapper"), ConnectionResetError(), "implicitly")) == TRANSIENT
    assert classify(raised(RuntimeError("wrapper"), ConnectionResetError(), "from None")) == PERMANENT
    # A rewording says it all: a PermanentError replacing a transient error stays permanent.
    assert classify(raised(PermanentError("no"), ConnectionResetError(), "implicitly")) == PERMANENT
