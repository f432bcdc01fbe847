"""TLS to MySQL/MariaDB through ETL_DATABASE_SSL_*, against a MariaDB that requires secure transport.

The server is started once for the module (mariadb_tls.TlsMariaDB); if it cannot start, the tests
fail with its log rather than skip.
"""

import logging
from unittest import mock

import pytest

from etl_assets.errors import PermanentError
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings
from etl_assets_tests.resources.mariadb_tls import PASSWORD, X509_USER, TlsMariaDB, plaintext_login_error

LOG = logging.getLogger(__name__)
ONCE = RetrySettings(attempts=1)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    server = TlsMariaDB(tmp_path_factory.mktemp("mariadb_tls")).start()
    try:
        # MariaDB answers a login without TLS, under require_secure_transport, as a wrong password.
        refused = plaintext_login_error(server)
        assert refused and "Access denied" in refused, f"the server let a plaintext login in: {refused}"
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(clean_env, monkeypatch, tls_server):
    """A DatabaseResource for the TLS server: url(host) sets ETL_DATABASE_URL; password as the secret."""
    monkeypatch.setenv("ETL_DATABASE_PASSWORD", PASSWORD)
    made = []

    def make(host: str = "localhost", ca=tls_server.certs.ca.cert, user: str | None = None) -> DatabaseResource:
        url = tls_server.url(host)
        monkeypatch.setenv("ETL_DATABASE_URL", url.replace("//etl@", f"//{user}@") if user else url)
        if ca:
            monkeypatch.setenv("ETL_DATABASE_SSL_CA", str(ca))
        made.append(DatabaseResource(secrets=SecretsResource()))
        return made[-1]

    yield make
    for resource in made:
        resource.teardown_after_execution(None)


def cipher(engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()[1]


def refusal(resource: DatabaseResource) -> str:
    """The PermanentError of check_connection, raised at once although retries are allowed."""
    log = mock.Mock()
    with pytest.raises(PermanentError) as refused:
        resource.check_connection(RetrySettings(), log)
    assert not log.warning.called, log.warning.call_args
    message = str(refused.value)
    assert message.startswith(f"cannot connect to the database {resource.describe()}: ")
    assert ":***@" in message and PASSWORD not in message
    return message


def test_a_login_with_the_ca_is_encrypted_on_both_engines(database):
    resource = database()
    resource.check_connection(ONCE, LOG)
    assert cipher(resource.engine) and cipher(resource.staging_engine)


def test_a_client_certificate_logs_in_a_user_that_requires_one(database, monkeypatch, tls_server):
    assert "Access denied" in refusal(database(user=X509_USER))
    monkeypatch.setenv("ETL_DATABASE_SSL_CERT", str(tls_server.certs.client.cert))
    monkeypatch.setenv("ETL_DATABASE_SSL_KEY", str(tls_server.certs.client.key))
    with_certificate = database(user=X509_USER)
    with_certificate.check_connection(ONCE, LOG)
    assert cipher(with_certificate.engine)


def test_without_the_ca_the_login_is_encrypted_but_the_server_unverified(database, tls_server):
    """PyMySQL's default, kept: TLS when the server offers it, with any certificate (even for
    another name, at 127.0.0.1): no protection from an intercepting server, hence the CA setting."""
    resource = database(host="127.0.0.1", ca=None)
    resource.check_connection(ONCE, LOG)
    assert cipher(resource.engine)


def test_a_ca_that_did_not_sign_the_server_certificate_is_refused(database, tls_server):
    assert "certificate verify failed" in refusal(database(ca=tls_server.certs.other_ca.cert))


def test_a_shared_context_is_never_another_settings(database, tls_server):
    """Contexts are shared per TLS settings: one the right CA built does not let a wrong CA in, nor
    an unverified one make the next verified login skip verification."""
    database(host="127.0.0.1", ca=None).check_connection(ONCE, LOG)  # no CA set: not verified
    assert "mismatch" in refusal(database(host="127.0.0.1"))
    database().check_connection(ONCE, LOG)
    assert "certificate verify failed" in refusal(database(ca=tls_server.certs.other_ca.cert))
    assert cipher(database().engine)


def test_a_server_certificate_for_another_name_is_refused(database):
    # The server's certificate, signed by the right CA, names localhost only.
    assert "mismatch" in refusal(database(host="127.0.0.1"))
