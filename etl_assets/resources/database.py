"""The database the contacts land in: SQLAlchemy engines, a masked description, a run lock."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy import exc as sa_exc

from etl_assets import files, settings
from etl_assets.contacts.staging import StagingConnection
from etl_assets.errors import PermanentError, reworded
from etl_assets.logs.redaction import redact
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings, call_with_retries
from etl_assets.tls_context import SharedTlsConnection

# PyMySQL's TLS arguments and the settings naming their files.
_TLS_FILES = {
    "ssl_ca": settings.DATABASE_SSL_CA,
    "ssl_cert": settings.DATABASE_SSL_CERT,
    "ssl_key": settings.DATABASE_SSL_KEY,
}


def _tls_connect_args() -> dict:
    """PyMySQL's TLS arguments from ETL_DATABASE_SSL_*. With a CA the server's certificate and
    host name are verified; without one PyMySQL's default stands (TLS if offered, unverified)."""
    files = {arg: settings.setting(name) for arg, name in _TLS_FILES.items()}
    for arg, name in _TLS_FILES.items():
        path = files[arg]
        if path and not Path(path).is_file():
            raise PermanentError(f"{name} names no file: {path!r}")
    if not any(files.values()):
        return {}
    if not files["ssl_ca"]:
        raise PermanentError(
            f"{settings.DATABASE_SSL_CERT} and {settings.DATABASE_SSL_KEY} need "
            f"{settings.DATABASE_SSL_CA}, the CA that signed the server's certificate"
        )
    if bool(files["ssl_cert"]) != bool(files["ssl_key"]):
        raise PermanentError(f"set both {settings.DATABASE_SSL_CERT} and {settings.DATABASE_SSL_KEY}, or neither")
    # Separate ssl_* arguments, not an `ssl` dict: PyMySQL drops the dict once ssl_verify_* is given.
    return {**{arg: path for arg, path in files.items() if path}, "ssl_verify_cert": True, "ssl_verify_identity": True}


class DatabaseResource(dg.ConfigurableResource):
    """MySQL/MariaDB in production (`mysql+pymysql://`), SQLite on the embedded defaults.

    The URL (ETL_DATABASE_URL) and password (secret ETL_DATABASE_PASSWORD) are not fields, so
    run config launched from the UI cannot point the run, and the password, at another server.
    """

    lock_timeout_seconds: int = 900
    secrets: dg.ResourceDependency[SecretsResource]

    _engine: sa.Engine | None = PrivateAttr(default=None)
    _staging_engine: sa.Engine | None = PrivateAttr(default=None)

    def _url(self) -> sa.URL:
        raw = settings.setting(settings.DATABASE_URL)
        if raw is None:
            return sa.make_url(f"sqlite:///{settings.data_dir() / 'etl.sqlite'}")
        try:
            url = sa.make_url(raw)
        except sa_exc.ArgumentError:  # not echoed: where it does not parse, a password cannot be found to mask
            raise PermanentError(
                f"{settings.DATABASE_URL} is not a SQLAlchemy URL of the form dialect+driver://user@host:port/db "
                f"(e.g. mysql+pymysql://etl@db:3306/etl; {len(raw)} characters, not shown)"
            ) from None
        password = self.secrets.get(settings.DATABASE_PASSWORD)
        return url.set(password=password) if password and not url.password else url

    def describe(self) -> str:
        return self._url().render_as_string(hide_password=True)

    def is_default(self) -> bool:
        return not settings.setting(settings.DATABASE_URL)

    @property
    def engine(self) -> sa.Engine:
        """For everything but the loader's staging writes: LOAD DATA LOCAL is off on its connections."""
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    @property
    def staging_engine(self) -> sa.Engine:
        """For the loader's staging writes only. On MySQL its connections answer a LOAD DATA LOCAL
        request, and only with the rows the loader streams under the name it gave (StagingConnection);
        elsewhere `engine`."""
        if self._staging_engine is None:
            main = self.engine
            self._staging_engine = self._create_engine(StagingConnection) if main.dialect.name == "mysql" else main
        return self._staging_engine

    def _create_engine(self, connection_class: type = SharedTlsConnection) -> sa.Engine:
        url = self._url()
        connect_args: dict = {}
        if url.get_backend_name() == "mysql":
            connect_args = {"connect_timeout": 10, "charset": "utf8mb4", **_tls_connect_args()}
        elif url.get_backend_name() == "sqlite":
            connect_args = {"timeout": 60}
            if self.is_default():  # owner-only before SQLite opens it: its journal and WAL take its mode
                files.open_private(Path(url.database or ""), "ab").close()
        try:
            engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        except (sa_exc.NoSuchModuleError, ModuleNotFoundError) as exc:
            raise PermanentError(
                f"{settings.DATABASE_URL} names a driver that is not installed ({url.drivername}): {exc}"
            ) from None
        if url.get_backend_name() == "mysql":  # PyMySQL, the driver installed
            sa.event.listen(
                engine, "do_connect", lambda _dialect, _record, cargs, cparams: connection_class(*cargs, **cparams)
            )
        return engine

    def check_connection(self, retry: RetrySettings, log) -> None:
        """Connect once (with in-step retries), failing with the masked URL and the server's reason.

        As `etl_assets.errors.classify` judges the driver's error: a server down or refusing
        connections (2003), gone away or out of connections is retried, then raised as
        TransientError (the step retries); a refused login (1045), an unknown database (1049) or a
        server certificate ETL_DATABASE_SSL_CA does not vouch for (PyMySQL says 2003 for it too)
        is not retried and raised as PermanentError.
        """

        def connect() -> None:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

        try:
            call_with_retries(connect, f"connecting to {self.describe()}", retry, log)
        except sa_exc.DBAPIError as exc:
            raise reworded(exc, f"cannot connect to the database {self.describe()}: {redact(str(exc.orig))}") from None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Serialise a critical section across runs: GET_LOCK on MySQL, SQLite's own write lock elsewhere."""
        if self.engine.dialect.name != "mysql":
            yield
            return
        with self.engine.connect() as conn:
            got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, self.lock_timeout_seconds)).scalar()
            if got != 1:
                raise PermanentError(
                    f"another run has held the database lock {name!r} for over "
                    f"{self.lock_timeout_seconds}s; is a run stuck?"
                )
            try:
                yield
            finally:
                with contextlib.suppress(sa_exc.DBAPIError):
                    conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for engine in (self._engine, self._staging_engine):
            if engine is not None:
                engine.dispose()
