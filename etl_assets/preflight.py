"""Preflight: what would make a run fail later, checked before any data moves.

One table (check | result | what to change), built from what the resources answer:

- **secrets**: the backend, and each secret the run will need (the HubSpot token when the sync is
  live, the database password when ETL_DATABASE_URL names a server without one, Kaggle
  credentials when a dataset is configured): found or not, and where it was looked for. Never a
  value.
- **Kaggle** (KAGGLE_DATASET set): the dataset's current version and its file list (the CSV the
  run would load, KAGGLE_FILE if set). Nothing is downloaded.
- **database**: the login; on MySQL/MariaDB the privileges the loader uses, tried on a scratch
  table (see `probe_privileges`), and `local_infile`; on SQLite, that the file's folder is writable.
- **HubSpot**: the mode (live or dry run, and why); live: the token, the scopes, and every mapped
  property (exists with a compatible type and writable, or will be created). The listing of the
  properties is stored for the sync to reuse (hubspot/property_cache.py), never failing a check.

Each row is ok, warn, fail or skipped. A fail fails the step naming every failed check; when the
only failures are ones a retry may fix (Kaggle 503, database unreachable) the error is a
TransientError, so the step's RetryPolicy applies. The functions building rows from answers are
pure (tested without a server); `run_checks` asks the resources.

`quick` is the preflight `daily_etl` runs first: it leaves out the Kaggle requests (kaggle_dataset's
first request is the same check, and it fails before downloading anything) and the write-scope
probe (the sync's first batch names a missing scope before anything is marked synced): one HubSpot
request in all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from etl_assets import settings
from etl_assets.archive import pick_csv
from etl_assets.contacts.mapping import ColumnMap, load_column_map
from etl_assets.errors import (
    PermanentError,
    TransientError,
    is_transient,
    mysql_error_code,
)
from etl_assets.hubspot import companies_state, modes, property_cache, removals
from etl_assets.hubspot.client import HubSpotApi, HubSpotApiError
from etl_assets.hubspot.properties import PropertyDefinition, declared, mapping_problems
from etl_assets.logs.redaction import redact
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource, SyncMode
from etl_assets.resources.kaggle import KaggleResource, describe_http_error, split_ref
from etl_assets.resources.secrets import (
    BACKEND_VARIABLE,
    SecretsResource,
)
from etl_assets.retrying import call_with_retries

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"

READ_SCOPE = "crm.schemas.contacts.read"
WRITE_SCOPE = "crm.objects.contacts.write"
SCHEMA_WRITE_SCOPE = "crm.schemas.contacts.write"

# The scratch table the privilege probe creates and drops, and the lock that keeps two probes apart.
PROBE_TABLE = "etl_preflight_probe"
PROBE_RENAMED = f"{PROBE_TABLE}_renamed"
PROBE_LOCK = "etl_assets.preflight"
# MySQL/MariaDB: "command denied" (table, column), "access denied" (database), "need a privilege".
_DENIED_CODES = {1142, 1143, 1044, 1227}


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # OK, WARN, FAIL or SKIPPED
    detail: str = ""
    change: str = ""
    transient: bool = False  # failed for a reason a retry may fix (an outage, not a setting)

    @property
    def result(self) -> str:
        return f"{self.status}: {self.detail}" if self.detail else self.status


def _cell(text: str) -> str:
    return redact(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| check | result | what to change |", "| --- | --- | --- |"]
    lines += [f"| {_cell(row.check)} | {_cell(row.result)} | {_cell(row.change) or '—'} |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[Row]) -> str:
    """The table for the log: aligned columns, one row per line."""
    table = [("check", "result", "what to change")] + [
        (redact(row.check), redact(row.result), redact(row.change) or "-") for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    return "\n".join(f"{check:<{widths[0]}} | {result:<{widths[1]}} | {change}" for check, result, change in table)


def failures(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.status == FAIL]


def verdict(rows: Sequence[Row]) -> Exception | None:
    """The error that fails the step (None when nothing failed), naming every failed check.

    Transient only when every failure is: a setting that is wrong stays wrong whatever a retry does.
    """
    failed = failures(rows)
    if not failed:
        return None
    named = "; ".join(f"[{row.check}] {row.detail}" for row in failed)
    message = (
        f"{len(failed)} check(s) failed, before any data moved: {named}. "
        "The preflight table (log, and the asset's observation) says what to change"
    )
    return TransientError(message) if all(row.transient for row in failed) else PermanentError(message)


def summary(rows: Sequence[Row]) -> str:
    counts = {status: sum(row.status == status for row in rows) for status in (OK, WARN, FAIL, SKIPPED)}
    return ", ".join(f"{count} {status}" for status, count in counts.items() if count)


def _error_row(check: str, exc: BaseException, change: str = "") -> Row:
    """A check that raised: its message (PermanentError's say what to change), transient or not."""
    if isinstance(exc, PermanentError):
        return Row(check, FAIL, str(exc), change)
    transient = is_transient(exc)
    text = str(exc) if isinstance(exc, TransientError) else f"{type(exc).__name__}: {exc}"
    return Row(
        check,
        FAIL,
        text,
        change or ("a retry may get through: the step retries" if transient else ""),
        transient=transient,
    )


def guarded(check: str, fn: Callable[[], list[Row]], change: str = "") -> list[Row]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row of the table
        return [_error_row(check, exc, change)]


# --------------------------------------------------------------------------- secrets


def backend_row(secrets: SecretsResource) -> tuple[Row, str | None]:
    try:
        backend = secrets.resolved_backend()
    except PermanentError as exc:
        return Row(
            "secrets backend", FAIL, str(exc), f"set {BACKEND_VARIABLE} to one of the backends the README lists"
        ), None
    where = {
        "env": "environment variables",
        "files": f"files in {settings.value(settings.SECRETS_DIR)} ({settings.SECRETS_DIR})",
        "aws": "AWS Secrets Manager (ETL_AWS_SECRET_ID / ETL_AWS_SECRET_PREFIX)",
        "vault": "Vault/OpenBao KV v2 (VAULT_ADDR, ETL_VAULT_PATH)",
        "gcp": "Google Secret Manager (ETL_GCP_PROJECT, ETL_GCP_SECRET_ID / ETL_GCP_SECRET_PREFIX)",
    }[backend]
    return Row("secrets backend", OK, f"{backend}: {where}"), backend


def _missing(secrets: SecretsResource, name: str) -> str | None:
    """None when the secret is found, else SecretsResource's own "missing from ... (where)" message."""
    try:
        secrets.get(name, required=True)
    except PermanentError as exc:
        return str(exc)
    return None


def hubspot_token_row(mode: SyncMode | None, mode_error: Exception | None, backend: str | None) -> Row:
    check = f"secret {settings.HUBSPOT_ACCESS_TOKEN}"
    if mode_error is not None:
        return _error_row(
            check,
            mode_error,
            f"store the private app's token as {settings.HUBSPOT_ACCESS_TOKEN} "
            f"in the {backend or 'chosen'} secrets backend, or set "
            f"{settings.HUBSPOT_DRY_RUN}=true",
        )
    if mode is None:
        return Row(check, SKIPPED, "the secrets backend is not usable")
    if not mode.live:
        return Row(check, SKIPPED, f"not needed: HubSpot dry run ({mode.reason})")
    return Row(check, OK, f"found in the {backend} secrets backend")


def database_password_row(secrets: SecretsResource, backend: str) -> Row:
    check = f"secret {settings.DATABASE_PASSWORD}"
    raw = settings.setting(settings.DATABASE_URL)
    if raw is None:
        return Row(check, SKIPPED, "not needed: SQLite (no ETL_DATABASE_URL)")
    try:
        url = sa.make_url(raw)
    except sa_exc.ArgumentError:
        return Row(check, SKIPPED, f"{settings.DATABASE_URL} does not parse (see the database login check)")
    if url.get_backend_name() == "sqlite":
        return Row(check, SKIPPED, "not needed: SQLite")
    if url.password:
        return Row(
            check,
            OK,
            f"not needed: {settings.DATABASE_URL} carries a password",
            f"keep the password out of the URL, in the secret {settings.DATABASE_PASSWORD}",
        )
    missing = _missing(secrets, settings.DATABASE_PASSWORD)
    if missing is None:
        return Row(check, OK, f"found in the {backend} secrets backend")
    return Row(
        check,
        WARN,
        f"{missing}; connecting without a password",
        f"store the database password as {settings.DATABASE_PASSWORD}, unless the user has none",
    )


def kaggle_config_file() -> Path:
    """Where the kaggle client looks for kaggle.json (KaggleApi.config_dir, without creating it)."""
    configured = settings.setting(settings.KAGGLE_CONFIG_DIR)
    if configured:
        return Path(configured) / "kaggle.json"
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy / "kaggle.json"
    return Path(settings.setting(settings.XDG_CONFIG_HOME) or Path.home() / ".config") / "kaggle" / "kaggle.json"


def kaggle_credentials_row(secrets: SecretsResource, backend: str, ref: str | None) -> Row:
    """Which credentials KaggleResource would use, in its order: token, username + key, kaggle.json."""
    check = "Kaggle credentials"
    if ref is None:
        return Row(check, SKIPPED, "not needed: the embedded sample is used")
    token_missing = _missing(secrets, settings.KAGGLE_API_TOKEN)
    if token_missing is None:
        return Row(check, OK, f"KAGGLE_API_TOKEN found in the {backend} secrets backend")
    username = settings.setting(settings.KAGGLE_USERNAME) or ""
    key_missing = _missing(secrets, settings.KAGGLE_KEY)
    if username and key_missing is None:
        return Row(check, OK, f"KAGGLE_USERNAME {username} with KAGGLE_KEY found in the {backend} secrets backend")
    config = kaggle_config_file()
    if config.is_file():
        return Row(check, OK, f"{config} (no KAGGLE_API_TOKEN or KAGGLE_KEY in the {backend} secrets backend)")
    looked = [
        token_missing,
        key_missing or "KAGGLE_KEY found",
        "KAGGLE_USERNAME is unset" if not username else "",
        f"no {config}",
    ]
    return Row(
        check,
        FAIL,
        "no Kaggle credentials: " + "; ".join(part for part in looked if part),
        f"store KAGGLE_API_TOKEN (or KAGGLE_KEY, with KAGGLE_USERNAME in the environment) in the "
        f"{backend} secrets backend",
    )


# --------------------------------------------------------------------------- Kaggle


def kaggle_file_row(names_by_size: Sequence[str], wanted: str | None) -> Row:
    """The CSV the run would load, from the dataset's file names (largest first), as archive.pick_csv picks it."""
    check = "Kaggle file"
    try:
        chosen = pick_csv(list(names_by_size), wanted)
    except PermanentError as exc:
        return Row(check, FAIL, str(exc), f"set {settings.KAGGLE_FILE} to one of the dataset's CSV files")
    how = f"{settings.KAGGLE_FILE}={wanted}" if wanted else "the largest CSV"
    return Row(check, OK, f"{chosen} ({how})")


def _kaggle_call(fn, what: str, ref: str, log: logging.Logger):
    """As kaggle_dataset calls Kaggle: in-step retries, then 5xx/429 transient, 401/403/404 permanent."""
    import requests

    try:
        return call_with_retries(fn, what, settings.retry_settings(), log)
    except requests.exceptions.HTTPError as exc:
        error = TransientError if is_transient(exc) else PermanentError
        raise error(describe_http_error(exc, ref)) from None


def kaggle_rows(kaggle: KaggleResource, ref: str | None, quick: bool, log: logging.Logger) -> list[Row]:
    if ref is None:
        return [Row("Kaggle dataset", SKIPPED, "the embedded sample is used")]
    if quick:
        return [
            Row(
                "Kaggle dataset",
                SKIPPED,
                "kaggle_dataset checks it with its first request, before downloading anything",
            )
        ]
    rows: list[Row] = []

    def dataset() -> list[Row]:
        version = _kaggle_call(lambda: kaggle.current_version(ref), f"reading Kaggle dataset {ref}", ref, log)
        rows.append(Row("Kaggle dataset", OK, f"{ref} version {version.number}, {version.total_bytes:,} bytes"))
        return rows

    def listing() -> list[Row]:
        names = _kaggle_call(lambda: list_files(kaggle, ref), f"listing the files of Kaggle dataset {ref}", ref, log)
        return [kaggle_file_row(names, kaggle.file_name())]

    found = guarded("Kaggle dataset", dataset)
    if found[-1].status != OK:
        return found + [Row("Kaggle file", SKIPPED, "the dataset could not be read")]
    return found + guarded("Kaggle file", listing)


def list_files(kaggle: KaggleResource, ref: str, page_size: int = 200) -> list[str]:
    """The current version's file names, largest first (ListDatasetFiles, paged)."""
    split_ref(ref)
    api = kaggle._api()  # the authenticated client KaggleResource builds; it has no listing call of its own
    files, token = [], None
    while True:
        response = api.dataset_list_files(ref, page_token=token, page_size=page_size)
        files += [(int(f.total_bytes or 0), str(f.name)) for f in response.dataset_files or []]
        token = response.next_page_token
        if not token:
            return [name for _size, name in sorted(files, key=lambda item: -item[0])]


# --------------------------------------------------------------------------- database


def local_infile_row(value) -> Row:
    check = "database local_infile"
    if str(value).upper() in ("1", "ON"):
        return Row(check, OK, "ON: the loader stages with LOAD DATA LOCAL INFILE")
    return Row(
        check,
        WARN,
        "OFF: the loader falls back to multi-row INSERTs (same result, slower)",
        "SET GLOBAL local_infile=1 (local_infile=ON in the server's configuration) for the bulk path",
    )


# What the loader and the sync do, each as one statement on the scratch table, with the privilege
# it needs (RENAME TABLE: ALTER and DROP on the old name, CREATE and INSERT on the new one).
PROBE_STEPS: tuple[tuple[str, str], ...] = (
    ("CREATE", "CREATE TABLE {table} (id INT NOT NULL PRIMARY KEY, email VARCHAR(254) NOT NULL)"),
    ("INDEX", "CREATE UNIQUE INDEX ux_{table}_email ON {table} (email)"),
    ("INSERT", "INSERT INTO {table} (id, email) VALUES (1, 'probe@example.invalid')"),
    ("UPDATE", "UPDATE {table} SET email = 'probe2@example.invalid' WHERE id = 1"),
    ("SELECT", "SELECT COUNT(*) FROM {table}"),
    ("DELETE", "DELETE FROM {table} WHERE id = 1"),
    ("ALTER", "RENAME TABLE {table} TO " + PROBE_RENAMED),
    ("DROP", "DROP TABLE {table}"),
)
LOADER_PRIVILEGES = ", ".join(privilege for privilege, _ in PROBE_STEPS)


def privileges_row(denied: Mapping[str, str], database_name: str | None, user: str | None) -> Row:
    """From the probe: privilege -> the server's refusal (empty when every statement went through)."""
    check = "database privileges"
    if not denied:
        return Row(check, OK, f"{LOADER_PRIVILEGES}: each tried on a scratch table, dropped again")
    named = "; ".join(f"{privilege} ({reason})" for privilege, reason in denied.items())
    return Row(
        check,
        FAIL,
        f"the loader needs {LOADER_PRIVILEGES}; refused: {named}",
        f"GRANT {LOADER_PRIVILEGES} ON `{database_name or '<database>'}`.* TO '{user or '<user>'}'",
    )


def _server_said(exc: sa_exc.DBAPIError) -> str:
    args: tuple = getattr(exc.orig, "args", ())
    return redact(str(args[1] if len(args) > 1 else exc.orig))


def probe_privileges(engine: sa.Engine) -> dict[str, str]:
    """Try each kind of statement the loader runs, on a scratch table; the privileges refused.

    Why try rather than read SHOW GRANTS: grants come through roles, wildcards (`etl\\_%`.*),
    global, database and table levels, and a read-only server (`read_only`, a replica) refuses
    writes whatever they say. Trying the loader's kind of statements answers the only question
    that matters. Nothing stays behind: the table is dropped at the end (and, should a run die in
    between, first thing by the next probe); MySQL commits each DDL statement at once, so a
    transaction could not undo it. If DROP itself is refused, the refusal says which table is left.
    A named lock keeps two probes (a preflight job and daily_etl's) off the one table. It holds a
    made-up row, never data.
    """
    denied: dict[str, str] = {}
    cleanup = f"DROP TABLE IF EXISTS {PROBE_TABLE}, {PROBE_RENAMED}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        got = conn.exec_driver_sql("SELECT GET_LOCK(%s, 60)", (PROBE_LOCK,)).scalar()
        if got != 1:
            raise TransientError("another preflight held the lock of the privilege probe for 60 s")
        try:
            with contextlib.suppress(sa_exc.DBAPIError):  # a probe left by a run that died midway
                conn.exec_driver_sql(cleanup)
            table = PROBE_TABLE
            for privilege, statement in PROBE_STEPS:
                try:
                    conn.exec_driver_sql(statement.format(table=table))
                except sa_exc.DBAPIError as exc:
                    if is_transient(exc):
                        raise
                    denied[privilege] = _server_said(exc)
                    if privilege == "CREATE" or mysql_error_code(exc) not in _DENIED_CODES:
                        break  # no table to go on with, or not a privilege at all (a read-only server, ...)
                else:
                    if privilege == "ALTER":
                        table = PROBE_RENAMED
        finally:
            with contextlib.suppress(sa_exc.DBAPIError):
                conn.exec_driver_sql(cleanup)
            with contextlib.suppress(sa_exc.DBAPIError):
                left = (
                    conn.exec_driver_sql(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                        "AND table_name IN (%s, %s)",
                        (PROBE_TABLE, PROBE_RENAMED),
                    )
                    .scalars()
                    .all()
                )
                if left:
                    denied["DROP"] = (
                        denied.get("DROP", "refused") + f"; the scratch table {left[0]} is left behind: drop it by hand"
                    )
            with contextlib.suppress(sa_exc.DBAPIError):
                conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (PROBE_LOCK,))
    return denied


def sqlite_rows(url: sa.URL) -> list[Row]:
    check = "database (SQLite)"
    if not url.database or url.database == ":memory:":
        return [Row(check, WARN, "in memory: nothing is kept after the run", f"set {settings.DATABASE_URL}")]
    path = Path(url.database)
    folder = path.parent
    if not folder.is_dir():
        return [Row(check, FAIL, f"the folder {folder} does not exist", f"create it or set {settings.DATABASE_URL}")]
    try:  # os.access is not enough (read-only mounts, ACLs): create and remove a file
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".etl-preflight-"):
            pass
    except OSError as exc:
        return [
            Row(
                check,
                FAIL,
                f"the folder {folder} is not writable ({exc.strerror})",
                f"make {folder} writable for the run's user, or set {settings.DATA_DIR}/{settings.DATABASE_URL}",
            )
        ]
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return [Row(check, FAIL, f"{path} is not readable and writable", "fix its permissions")]
    state = "exists" if path.exists() else "is created by the first load"
    return [Row(check, OK, f"{path} {state}; its folder is writable")]


def _connection_failure(exc: PermanentError | TransientError) -> Row:
    """check_connection's error: TransientError when the server is down or busy (errors.classify)."""
    transient = isinstance(exc, TransientError)
    return Row(
        "database login",
        FAIL,
        str(exc),
        "a retry may get through: the step retries"
        if transient
        else f"check {settings.DATABASE_URL} (user, host, database) and {settings.DATABASE_PASSWORD}",
        transient=transient,
    )


def database_rows(database: DatabaseResource, log: logging.Logger) -> list[Row]:
    try:
        url = sa.make_url(database.describe())  # parses ETL_DATABASE_URL; the password is masked
    except PermanentError as exc:
        return [Row("database login", FAIL, str(exc), f"fix {settings.DATABASE_URL}")]
    if url.get_backend_name() == "sqlite":
        return sqlite_rows(url)
    try:
        database.check_connection(settings.retry_settings(), log)
    except (PermanentError, TransientError) as exc:
        return [
            _connection_failure(exc),
            Row("database privileges", SKIPPED, "no login"),
            Row("database local_infile", SKIPPED, "no login"),
        ]
    rows = [Row("database login", OK, f"connected to {database.describe()}")]
    if url.get_backend_name() != "mysql":
        return rows + [Row("database privileges", SKIPPED, f"not checked on {url.get_backend_name()}")]
    engine = database.engine

    def privileges() -> list[Row]:
        return [privileges_row(probe_privileges(engine), url.database, url.username)]

    def local_infile() -> list[Row]:
        with engine.connect() as conn:
            return [local_infile_row(conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar())]

    return rows + guarded("database privileges", privileges) + guarded("database local_infile", local_infile)


# --------------------------------------------------------------------------- HubSpot


def property_rows(column_map: ColumnMap, definitions: Mapping[str, PropertyDefinition], may_create: bool) -> list[Row]:
    """One row per mapped property: ok, will be created, or its problem (mapping_problems's words)."""
    rows = []
    for name, problem in mapping_problems(column_map, definitions, may_create).items():
        check = f"HubSpot property {name}"
        if problem:
            rows.append(
                Row(check, FAIL, problem, f"change the column map ({column_map.origin}) or the property in HubSpot")
            )
        elif name in definitions:
            definition = definitions[name]
            rows.append(Row(check, OK, f"{definition.type} ({definition.field_type}), writable"))
        else:
            spec = next(spec for spec in column_map.hubspot_fields if spec.hubspot == name)
            rows.append(Row(check, OK, f"missing: will be created as {declared(spec).type}"))
    return rows


def to_create(column_map: ColumnMap, definitions: Mapping[str, PropertyDefinition], may_create: bool) -> list[str]:
    problems = mapping_problems(column_map, definitions, may_create)
    return [name for name, problem in problems.items() if problem is None and name not in definitions]


def scope_row(scope: str, error: HubSpotApiError | None, what: str) -> Row:
    """From the answer to a request needing `scope`: only a 403 MISSING_SCOPES means it is missing."""
    check = f"HubSpot scope {scope}"
    if error is not None and error.error.missing_scopes:
        return Row(
            check,
            FAIL,
            f"HubSpot's private app lacks the scope(s) {list(error.error.missing_scopes)} "
            f"({error.error.status} {error.error.category})",
            "add it to the private app (Settings > Integrations > Private apps > Scopes)",
        )
    if error is not None:
        return Row(
            check, OK, f"granted: {what} got {error.error.status} {error.error.category}, not 403 MISSING_SCOPES"
        )
    return Row(check, OK, f"granted: {what} went through")


def schema_write_row(created: Sequence[str]) -> Row:
    check = f"HubSpot scope {SCHEMA_WRITE_SCOPE}"
    if not created:
        return Row(check, SKIPPED, "not needed: every mapped property exists")
    return Row(
        check,
        WARN,
        f"not checked: it cannot be checked without creating a property; the sync will create {', '.join(created)}",
        f"make sure the private app has {SCHEMA_WRITE_SCOPE}, or create the properties in HubSpot",
    )


def store_listing(
    database: DatabaseResource | None,
    api: HubSpotApi,
    column_map: ColumnMap | None,
    definitions: Mapping[str, PropertyDefinition] | None,
    listed_at: dt.datetime,
    log: logging.Logger,
) -> None:
    """Store the listing when the sync could reuse it (property_cache). A side effect only, that never
    fails the preflight: a database problem is its rows' to report, a bad setting the sync's."""
    if database is None or column_map is None or definitions is None:
        return
    try:
        listing = property_cache.Listing(dict(definitions), listed_at)
        if property_cache.why_not_reuse(listing, column_map, property_cache.max_age_seconds(), listed_at):
            return  # the sync lists the properties again whatever is stored
        property_cache.ensure_table(database.engine)
        property_cache.store(database.engine, api.account_key, column_map, definitions, listed_at)
    except Exception as exc:  # noqa: BLE001 - the sync lists the properties itself then
        log.warning("Preflight: the property listing was not stored for the sync (%s)", type(exc).__name__)


def hubspot_rows(
    hubspot: HubSpotResource,
    mode: SyncMode | None,
    column_map: ColumnMap | None,
    quick: bool,
    backend: str | None,
    log: logging.Logger,
    database: DatabaseResource | None,
) -> list[Row]:
    """`database` (None when its checks failed) keeps the properties' listing for the sync to reuse."""
    if mode is None:
        return [Row("HubSpot mode", SKIPPED, "unknown: the token could not be read (see its secret's row)")]
    rows = [Row("HubSpot mode", OK, f"{mode.name} ({mode.reason})")]
    if not mode.live:
        return rows + [Row("HubSpot token, scopes, properties", SKIPPED, "dry run: nothing is sent to HubSpot")]
    api: HubSpotApi = hubspot.open_api(log)
    token = "HubSpot token"
    listed_at = companies_state.now()
    try:
        # Needs crm.schemas.contacts.read: the one request that checks the token, the read scope and the properties.
        definitions = api.contact_properties()
        read_error = None
    except HubSpotApiError as exc:
        definitions, read_error = None, exc
    store_listing(database, api, column_map, definitions, listed_at, log)
    if read_error is not None and not read_error.error.missing_scopes:
        return rows + [
            Row(
                token,
                FAIL,
                (
                    f"HubSpot rejected the access token ({read_error.error.summary()})"
                    if read_error.error.status == 401
                    else read_error.error.summary()
                ),
                f"store the private app's current token as {settings.HUBSPOT_ACCESS_TOKEN} in the "
                f"{backend} secrets backend",
            )
        ]
    rows.append(Row(token, OK, "accepted"))
    rows.append(scope_row(READ_SCOPE, read_error, "listing the contact properties"))
    if quick:
        rows.append(
            Row(
                f"HubSpot scope {WRITE_SCOPE}",
                SKIPPED,
                "daily_etl: the sync's first batch checks it, before anything is marked synced",
            )
        )
    else:
        # An upsert of no contact: nothing can be written. Whether HubSpot checks the scope before it
        # validates the (empty) body is unverified; only a 403 MISSING_SCOPES counts as the scope
        # missing, any other answer (200, a 400 for the empty list, ...) as granted. 5xx and dropped
        # connections are retried, then fail the check as transient.
        try:
            api.upsert_contacts([])
            write_error = None
        except HubSpotApiError as exc:
            write_error = exc
        if write_error is not None and write_error.error.status == 401:
            rows.append(Row(token, FAIL, f"HubSpot rejected the access token ({write_error.error.summary()})"))
        else:
            rows.append(scope_row(WRITE_SCOPE, write_error, "an upsert of no contact"))
    if column_map is None:
        return rows + [Row("HubSpot properties", SKIPPED, "the column map does not load (see its row)")]
    if definitions is None:
        return rows + [Row("HubSpot properties", SKIPPED, f"cannot be listed without {READ_SCOPE}")]
    may_create = hubspot.may_create_properties()
    rows += property_rows(column_map, definitions, may_create)
    rows.append(schema_write_row(to_create(column_map, definitions, may_create)))
    return rows


def sync_mode_row() -> Row:
    """HUBSPOT_SYNC_MODE and HUBSPOT_ON_REMOVED (with the archive share) hold values the sync takes."""
    detail = f"{modes.sync_mode()}; contacts that left the source: {removals.on_removed()}"
    if removals.on_removed() == removals.ARCHIVE:
        detail += f", at most {removals.max_archive_fraction():g} of this sync's contacts a run"
    return Row("HubSpot sync mode", OK, detail)


# --------------------------------------------------------------------------- all of it


def run_checks(
    secrets: SecretsResource,
    kaggle: KaggleResource,
    database: DatabaseResource,
    hubspot: HubSpotResource,
    log: logging.Logger,
    quick: bool = False,
) -> list[Row]:
    rows: list[Row] = []
    backend_check, backend = backend_row(secrets)
    rows.append(backend_check)

    mode, mode_error = None, None
    if backend is not None:
        try:
            mode = hubspot.mode()
        except Exception as exc:  # noqa: BLE001 - reported in the token's row
            mode_error = exc
    ref = kaggle.dataset_ref()
    if backend is not None:
        rows.append(hubspot_token_row(mode, mode_error, backend))
        rows += guarded(f"secret {settings.DATABASE_PASSWORD}", lambda: [database_password_row(secrets, backend)])
        rows += guarded("Kaggle credentials", lambda: [kaggle_credentials_row(secrets, backend, ref)])
    credentials_failed = any(row.check == "Kaggle credentials" and row.status == FAIL for row in rows)

    if credentials_failed and not quick:
        rows.append(Row("Kaggle dataset", SKIPPED, "no credentials"))
    else:
        rows += kaggle_rows(kaggle, ref, quick, log)

    database_checks = guarded("database login", lambda: database_rows(database, log))
    rows += database_checks
    usable_database = database if not failures(database_checks) else None

    column_map: ColumnMap | None = None
    try:
        column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
        rows.append(Row("column map", OK, f"{column_map.origin}: {len(column_map.hubspot_fields)} HubSpot properties"))
    except PermanentError as exc:
        rows.append(Row("column map", FAIL, str(exc), f"fix {settings.COLUMN_MAP}"))
    rows += guarded("HubSpot sync mode", lambda: [sync_mode_row()])
    rows += guarded("HubSpot", lambda: hubspot_rows(hubspot, mode, column_map, quick, backend, log, usable_database))
    return rows
