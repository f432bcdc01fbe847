"""The database the contacts land in: a SQLAlchemy engine, a masked description, a run lock."""

import contextlib
import re
from typing import Iterator, Optional

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr
from sqlalchemy import exc as sa_exc

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.resources.secrets import SECRET_FIELD, SecretsResource
from etl_assets.retrying import RetrySettings, call_with_retries

_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^/]*@")  # greedy: a password may hold "@"


def mask_url(raw: str) -> str:
    """The URL with any password replaced, also for URLs SQLAlchemy cannot parse."""
    return _PASSWORD_IN_URL.sub(r"\1***@", raw)


class DatabaseResource(dg.ConfigurableResource):
    """MySQL/MariaDB in production (`mysql+pymysql://`), SQLite on the embedded defaults."""

    url: Optional[str] = None  # falls back to ETL_DATABASE_URL, then SQLite under the data dir
    password: Optional[str] = Field(default=None, repr=False, json_schema_extra=SECRET_FIELD)  # else secret ETL_DATABASE_PASSWORD
    lock_timeout_seconds: int = 900
    secrets: dg.ResourceDependency[SecretsResource]

    _engine: Optional[sa.Engine] = PrivateAttr(default=None)

    def _url(self) -> sa.URL:
        raw = self.url or settings.setting(settings.DATABASE_URL)
        if raw is None:
            return sa.make_url(f"sqlite:///{settings.data_dir() / 'etl.sqlite'}")
        try:
            url = sa.make_url(raw)
        except sa_exc.ArgumentError:
            raise PermanentError(
                f"{settings.DATABASE_URL} is not a SQLAlchemy URL (dialect+driver://user:password@host:port/db): "
                f"{mask_url(raw)!r}") from None
        password = self.password or self.secrets.get(settings.DATABASE_PASSWORD)
        return url.set(password=password) if password and not url.password else url

    def describe(self) -> str:
        return self._url().render_as_string(hide_password=True)

    def is_default(self) -> bool:
        return not (self.url or settings.setting(settings.DATABASE_URL))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            url = self._url()
            connect_args: dict = {}
            if url.get_backend_name() == "mysql":
                connect_args = {"local_infile": True, "connect_timeout": 10, "charset": "utf8mb4"}
            elif url.get_backend_name() == "sqlite":
                connect_args = {"timeout": 60}
            try:
                self._engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
            except (sa_exc.NoSuchModuleError, ModuleNotFoundError) as exc:
                raise PermanentError(f"{settings.DATABASE_URL} names a driver that is not installed "
                                     f"({url.drivername}): {exc}") from None
        return self._engine

    def check_connection(self, retry: RetrySettings, log) -> None:
        """Connect once (with retries), failing with the masked URL and the server's reason."""

        def connect() -> None:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

        try:
            call_with_retries(connect, f"connecting to {self.describe()}", retry, log)
        except sa_exc.DBAPIError as exc:
            reason = mask_url(str(exc.orig))
            raise PermanentError(f"cannot connect to the database {self.describe()}: {reason}") from None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Serialise a critical section across runs: GET_LOCK on MySQL, SQLite's own write lock elsewhere."""
        if self.engine.dialect.name != "mysql":
            yield
            return
        with self.engine.connect() as conn:
            got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, self.lock_timeout_seconds)).scalar()
            if got != 1:
                raise PermanentError(f"another run has held the database lock {name!r} for over "
                                     f"{self.lock_timeout_seconds}s; is a run stuck?")
            try:
                yield
            finally:
                with contextlib.suppress(sa_exc.DBAPIError):
                    conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
