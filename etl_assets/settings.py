"""The configuration contract: every environment variable the package reads, once.

Each entry has its name, type, default, whether it is a secret, a one-line meaning and its
README group; the README's configuration tables are generated from them
(`python scripts/config_table.py --write-readme`; a test fails when they differ). The module
constants (`HUBSPOT_RATE_LIMIT`, ...) are the variables' names: code reads values by them.

Values are read from the process environment (`os.environ`) each time a run asks for one,
never at import time, so the webserver and daemon load this code location with nothing
configured. The exceptions are the schedule and retry settings, which Dagster needs when it
loads the definitions. Secrets are not read here but through `SecretsResource`, from the
backend `ETL_SECRETS_BACKEND` names; `setting()` refuses them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etl_assets.errors import PermanentError
from etl_assets.files import private_dir

if TYPE_CHECKING:
    from etl_assets.retrying import RetrySettings


@dataclass(frozen=True)
class Setting:
    name: str
    type: type  # str, int, float or bool: how `value()` parses it
    default: str | None  # as it would be written in the environment; None: unset
    meaning: str  # Markdown, one line
    group: str
    secret: bool = False  # read through SecretsResource (the secrets backend), not `setting()`
    shown_default: str | None = None  # the README's words when the default is computed or another tool's

    def readme_default(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        return "—" if self.default is None else f"`{self.default}`"


REGISTRY: dict[str, Setting] = {}


def _define(group: str) -> Callable[..., str]:
    def define(
        name: str, kind: type, default: str | None, meaning: str, *, secret: bool = False, shown: str | None = None
    ) -> str:
        assert name not in REGISTRY, f"{name} is defined twice"
        REGISTRY[name] = Setting(name, kind, default, meaning, group, secret, shown)
        return name

    return define


_kaggle = _define("Kaggle (source)")
KAGGLE_DATASET = _kaggle("KAGGLE_DATASET", str, None, "`owner/slug` of the Kaggle dataset", shown="embedded sample")
KAGGLE_FILE = _kaggle("KAGGLE_FILE", str, None, "which CSV inside the dataset", shown="the only/largest CSV")
KAGGLE_API_TOKEN = _kaggle(
    "KAGGLE_API_TOKEN",
    str,
    None,
    "Kaggle API token (bearer); or `KAGGLE_USERNAME` + `KAGGLE_KEY`; or `kaggle.json` "
    "in `KAGGLE_CONFIG_DIR`/`~/.kaggle`",
    secret=True,
)
KAGGLE_USERNAME = _kaggle("KAGGLE_USERNAME", str, None, "Kaggle user name, with the secret `KAGGLE_KEY` (not a secret)")
KAGGLE_KEY = _kaggle("KAGGLE_KEY", str, None, "the Kaggle API key of `KAGGLE_USERNAME`", secret=True)
KAGGLE_CONFIG_DIR = _kaggle(
    "KAGGLE_CONFIG_DIR",
    str,
    None,
    "the folder of `kaggle.json`, used when neither a token nor a key is set (read by the Kaggle client too)",
    shown="`~/.kaggle`, else `$XDG_CONFIG_HOME/kaggle`",
)
XDG_CONFIG_HOME = _kaggle(
    "XDG_CONFIG_HOME",
    str,
    None,
    "the desktop convention the Kaggle client follows for `kaggle.json` when `~/.kaggle` does not exist",
    shown="`~/.config`",
)
KAGGLE_API_ENVIRONMENT = _kaggle(
    "KAGGLE_API_ENVIRONMENT",
    str,
    None,
    "as kagglesdk reads it; `TEST` → `http://localhost:7777` (tests only)",
    shown="production",
)

_database = _define("Database")
DATABASE_URL = _database(
    "ETL_DATABASE_URL",
    str,
    None,
    "SQLAlchemy URL; production: `mysql+pymysql://user@host:3306/db`",
    shown="SQLite in the data dir",
)
DATABASE_PASSWORD = _database(
    "ETL_DATABASE_PASSWORD", str, None, "the database password, kept apart from the URL", secret=True
)
DATABASE_SSL_CA = _database(
    "ETL_DATABASE_SSL_CA",
    str,
    None,
    "CA file (PEM): TLS with the server's certificate and host name verified, "
    "see [Database connection](#database-connection)",
    shown="— (TLS if the server offers it, unverified)",
)
DATABASE_SSL_CERT = _database(
    "ETL_DATABASE_SSL_CERT",
    str,
    None,
    "client certificate (PEM), for a MySQL user `REQUIRE X509`; needs the CA and the key",
)
DATABASE_SSL_KEY = _database("ETL_DATABASE_SSL_KEY", str, None, "the client certificate's private key (PEM)")

_hubspot = _define("HubSpot (destination)")
HUBSPOT_ACCESS_TOKEN = _hubspot(
    "HUBSPOT_ACCESS_TOKEN",
    str,
    None,
    "HubSpot private app token",
    secret=True,
    shown="dry run if nothing is configured, else the sync fails",
)
HUBSPOT_DRY_RUN = _hubspot(
    "HUBSPOT_DRY_RUN",
    bool,
    "false",
    "`true`: a dry run to the outbox even with a token (which is then not read); "
    "the run's metadata (`mode`, `mode_reason`) and log say which mode ran and why",
)
HUBSPOT_API_BASE = _hubspot("HUBSPOT_API_BASE", str, "https://api.hubapi.com", "HubSpot API base URL")
HUBSPOT_RATE_LIMIT = _hubspot(
    "HUBSPOT_RATE_LIMIT",
    int,
    "100",
    "requests per 10 s the sync keeps under (190 Pro/Enterprise, 250 with the "
    "capacity pack); lowered automatically when HubSpot's `X-HubSpot-RateLimit-Max` says so",
)
HUBSPOT_MAX_IN_FLIGHT = _hubspot(
    "HUBSPOT_MAX_IN_FLIGHT",
    int,
    "8",
    "batch requests in flight at once, so that a window's requests go out in a burst",
)
HUBSPOT_CREATE_PROPERTIES = _hubspot(
    "HUBSPOT_CREATE_PROPERTIES",
    bool,
    "true",
    "create custom contact properties the column map names and the account lacks; `false` fails the run naming them",
)
HUBSPOT_PROPERTIES_MAX_AGE_SECONDS = _hubspot(
    "HUBSPOT_PROPERTIES_MAX_AGE_SECONDS",
    int,
    "900",
    "the sync reuses a listing of the contact properties stored at most this long ago (the preflight's, "
    "say) instead of listing them again; `0` lists them every run",
)
HUBSPOT_MAX_FAILED_RATE = _hubspot(
    "HUBSPOT_MAX_FAILED_RATE",
    float,
    "0.01",
    "the `hubspot_failed_rate` check fails above this share of refused contacts",
)
HUBSPOT_SYNC_MODE = _hubspot(
    "HUBSPOT_SYNC_MODE",
    str,
    "upsert",
    "`upsert` creates or updates by email; `update_only` never creates (unknown emails are skipped); "
    "`create_only` never changes an existing contact (it is skipped)",
)
HUBSPOT_ON_REMOVED = _hubspot(
    "HUBSPOT_ON_REMOVED",
    str,
    "keep",
    "contacts that left the source: `keep` them in HubSpot (marked `removed` in `hubspot_sync_state`) "
    "or `archive` the ones this sync created or last wrote",
)
HUBSPOT_MAX_ARCHIVE_FRACTION = _hubspot(
    "HUBSPOT_MAX_ARCHIVE_FRACTION",
    float,
    "0.1",
    "a run that would archive more than this share of the contacts it wrote to HubSpot fails before "
    "archiving any; raise it (up to 1) for one run to let a real purge through",
)
HUBSPOT_COMPANIES = _hubspot(
    "HUBSPOT_COMPANIES",
    bool,
    "false",
    "`true`: also sync companies (from the column map's `company: name`/`company: domain` columns) and "
    "associate each contact with its company; `false`: those assets send nothing and say so",
)
HUBSPOT_COMPANY_KEY = _hubspot(
    "HUBSPOT_COMPANY_KEY",
    str,
    "domain-then-name",
    "what makes two contacts' companies one: `domain-then-name` (the website's domain, else the "
    "normalised name), `domain` (contacts without a usable website get no company) or `name`",
)

_load = _define("Loading the source")
COLUMN_MAP = _load("ETL_COLUMN_MAP", str, None, "path to a YAML/JSON column map (below)", shown="packaged default")
MAX_REJECT_RATE = _load(
    "ETL_MAX_REJECT_RATE", float, "0.05", "the `contacts_reject_rate` check warns above this share of rejected rows"
)
SOURCE_ENCODING = _load(
    "ETL_SOURCE_ENCODING",
    str,
    "utf-8",
    "the CSV's encoding (`cp1252`, `latin-1`, `utf-16`, any Python codec); UTF-8 may carry a byte-order mark",
)
SOURCE_DELIMITER = _load(
    "ETL_SOURCE_DELIMITER",
    str,
    None,
    "one character, or `comma`, `semicolon`, `tab`, `pipe`; unset, detected "
    "from the header line among comma, semicolon and tab",
    shown="detected",
)
MAX_DELETE_FRACTION = _load(
    "ETL_MAX_DELETE_FRACTION",
    float,
    "0.1",
    "a load that would delete more than this share of `contacts` is refused before it changes anything",
)
ALLOW_MASS_DELETE = _load(
    "ETL_ALLOW_MASS_DELETE",
    bool,
    "false",
    "`true` lets a load delete more than that (a deliberate purge); the "
    "removed contacts are kept in `contacts_removed`",
)
MAX_SOURCE_BYTES = _load(
    "ETL_MAX_SOURCE_BYTES",
    int,
    str(4 * 2**30),
    "the most the chosen CSV may unpack to from the Kaggle zip",
    shown="`4294967296` (4 GiB)",
)

_runs = _define("Schedule and retries")
SCHEDULE_CRON = _runs(
    "ETL_SCHEDULE_CRON", str, "0 6 * * *", "when the schedule fires (read when the code location loads)"
)
SCHEDULE_TZ = _runs("ETL_SCHEDULE_TZ", str, "UTC", "the schedule's timezone")
RETRY_ATTEMPTS = _runs(
    "ETL_RETRY_ATTEMPTS", int, "6", "in-step retries: attempts per HubSpot batch, Kaggle call and database chunk"
)
RETRY_MAX_SECONDS = _runs(
    "ETL_RETRY_MAX_SECONDS", float, "180", "in-step retries: time bound per call (exponential backoff with jitter)"
)
STEP_RETRIES = _runs(
    "ETL_STEP_RETRIES",
    int,
    "3",
    "step retries: Dagster re-runs a failed step this many times (exponential, jitter), not the steps that succeeded",
)
# With 3 step retries, an outage of up to ~17 minutes is ridden out (README).
STEP_RETRY_DELAY = _runs(
    "ETL_STEP_RETRY_DELAY_SECONDS",
    int,
    "120",
    "step retries: the first delay; retry *n* waits (2^*n*−1) × this, ± this (jitter)",
)
ALERT_WEBHOOK_URL = _runs(
    "ETL_ALERT_WEBHOOK_URL",
    str,
    None,
    "the failure sensor POSTs each alert here (Slack-compatible `text`); read "
    "through the secrets backend, never shown in an error",
    secret=True,
)

_data = _define("Data on disk")
DATA_DIR = _data(
    "ETL_DATA_DIR",
    str,
    None,
    "downloads, the dry-run outbox, the default SQLite file",
    shown="`$DAGSTER_HOME/etl_data`, else `.etl/`",
)
DAGSTER_HOME = _data(
    "DAGSTER_HOME", str, None, "Dagster's own instance folder; holds the data dir unless `ETL_DATA_DIR` is set"
)
OUTBOX_MAX_AGE_DAYS = _data(
    "ETL_OUTBOX_MAX_AGE_DAYS",
    float,
    "30",
    "dry-run outbox files older than this are deleted at the start of each dry run",
)

# etl_assets/logs/handlers.py; the Datadog API key is a secret (read through SecretsResource),
# DD_SITE is the Datadog agent's and client's own name.
_logs = _define("Logs")
LOG_LEVEL = _logs(
    "ETL_LOG_LEVEL",
    str,
    "INFO",
    "the threshold of every output: `DEBUG`, `INFO`, `WARNING`, "
    "`ERROR` or `CRITICAL` (Dagster's events count as `INFO`)",
)
LOG_FILE = _logs("ETL_LOG_FILE", str, None, "path of the rotating JSON log file (unset: no file)")
CLOUDWATCH_LOG_GROUP = _logs(
    "ETL_CLOUDWATCH_LOG_GROUP", str, None, "CloudWatch Logs group to ship to (unset: no shipping)"
)
CLOUDWATCH_LOG_STREAM = _logs(
    "ETL_CLOUDWATCH_LOG_STREAM", str, None, "the CloudWatch stream name", shown="`etl_assets/<hostname>`"
)
DATADOG_API_KEY = _logs(
    "ETL_DATADOG_API_KEY",
    str,
    None,
    "a Datadog API key: run logs are shipped to Datadog's logs intake (see "
    "[Datadog](#datadog)); read through the secrets backend (unset or empty: no shipping)",
    secret=True,
)
DD_SITE = _logs(
    "DD_SITE",
    str,
    "datadoghq.com",
    "your Datadog site (`us3.datadoghq.com`, `us5.datadoghq.com`, `datadoghq.eu`, "
    "`ap1.datadoghq.com`, `ddog-gov.com`, …): logs go to `https://http-intake.logs.<site>/api/v2/logs`",
)
DATADOG_LOGS_URL = _logs(
    "ETL_DATADOG_LOGS_URL",
    str,
    None,
    "only to send the logs to a relay/proxy or a local intake (`…/api/v2/logs`) instead",
    shown="the site's intake",
)

# Where secrets come from (etl_assets/resources/secrets.py and secret_backends/); the VAULT_* names are
# Vault's own (its CLI's), the AWS_* ones the AWS SDK's.
_secrets = _define("Secrets backend")
SECRETS_BACKEND = _secrets(
    "ETL_SECRETS_BACKEND",
    str,
    "env",
    "where credentials come from: `env`, `files`, `aws`, `vault` (Vault/OpenBao) "
    "or `gcp` (Google Secret Manager), see [Secrets](#secrets)",
)
SECRETS_DIR = _secrets("ETL_SECRETS_DIR", str, "/run/secrets", "files: the folder holding one file per secret")
AWS_SECRET_ID = _secrets("ETL_AWS_SECRET_ID", str, None, "aws: the JSON secret holding every key; or")
AWS_SECRET_PREFIX = _secrets("ETL_AWS_SECRET_PREFIX", str, None, "aws: one secret per key, named prefix + `NAME`")
AWS_REGION = _secrets(
    "AWS_REGION",
    str,
    None,
    "aws and CloudWatch Logs: the AWS region (credentials and endpoint come from the standard AWS chain)",
    shown="`AWS_DEFAULT_REGION`",
)
AWS_DEFAULT_REGION = _secrets("AWS_DEFAULT_REGION", str, None, "the AWS region when `AWS_REGION` is unset")
VAULT_ADDR = _secrets(
    "VAULT_ADDR",
    str,
    None,
    "the Vault/OpenBao address, e.g. `https://vault.example.com:8200`",
    shown="— (required for `vault`)",
)
VAULT_CACERT = _secrets(
    "VAULT_CACERT",
    str,
    None,
    "vault: CA file (PEM) that signed the server's certificate; TLS is always verified",
    shown="the system's CAs",
)
VAULT_TOKEN = _secrets(
    "VAULT_TOKEN",
    str,
    None,
    "vault: a token; or `VAULT_TOKEN_FILE`, or AppRole below — exactly "
    "one way (a login, read from the environment: it opens the secrets backend)",
)
VAULT_TOKEN_FILE = _secrets("VAULT_TOKEN_FILE", str, None, "vault: a file holding a token (e.g. Vault Agent's sink)")
VAULT_ROLE_ID = _secrets(
    "VAULT_ROLE_ID", str, None, "vault: AppRole login (auth mount `approle/`), with `VAULT_SECRET_ID_FILE`"
)
VAULT_SECRET_ID_FILE = _secrets("VAULT_SECRET_ID_FILE", str, None, "vault: the file holding the AppRole secret id")
VAULT_MOUNT = _secrets("ETL_VAULT_MOUNT", str, "secret", "vault: the KV version 2 mount")
VAULT_PATH = _secrets(
    "ETL_VAULT_PATH",
    str,
    None,
    "vault: the KV secret whose keys are the secret names",
    shown="— (required for `vault`)",
)
GCP_PROJECT = _secrets("ETL_GCP_PROJECT", str, None, "gcp: the Google Cloud project id", shown="— (required for `gcp`)")
GCP_SECRET_ID = _secrets("ETL_GCP_SECRET_ID", str, None, "gcp: one JSON secret holding every key; or")
GCP_SECRET_PREFIX = _secrets("ETL_GCP_SECRET_PREFIX", str, None, "gcp: one secret per key, named prefix + `NAME`")
GCP_SECRETS_ENDPOINT = _secrets(
    "ETL_GCP_SECRETS_ENDPOINT",
    str,
    None,
    "gcp: only to point the client at a local test server (`http://…`: anonymous) or another `https://` endpoint",
    shown="Google's",
)

SECRETS = frozenset(name for name, entry in REGISTRY.items() if entry.secret)


# Reading


def _entry(name: str) -> Setting:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"{name} is not in the settings registry (etl_assets/settings.py)") from None


def default(name: str) -> str | None:
    """The documented default, as it would be written in the environment."""
    return _entry(name).default


def setting(name: str) -> str | None:
    """The variable's value, or its documented default; blank counts as unset."""
    if _entry(name).secret:
        raise ValueError(f"{name} is a secret: read it through SecretsResource")
    value = os.environ.get(name, "").strip()
    return value or default(name)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse(name: str, raw: str | None, kind: type):
    """`raw` as `kind` (int, float, bool or str), or a PermanentError naming the variable and the value."""
    if kind is bool:
        lowered = (raw or "").lower()
        if lowered not in _TRUE + _FALSE:
            raise PermanentError(f"{name} must be true or false, got {lowered!r}")
        return lowered in _TRUE
    if kind in (int, float):
        try:
            return kind(raw if raw is not None else "")
        except ValueError:
            description = "a whole number" if kind is int else "a number"
            raise PermanentError(f"{name} must be {description}, got {raw!r}") from None
    return raw


def value(name: str):
    """The variable's value parsed as the registry's type says."""
    return parse(name, setting(name), _entry(name).type)


def default_value(name: str):
    """The documented default parsed as the registry's type says: for a function's default argument."""
    return parse(name, default(name), _entry(name).type)


def int_setting(name: str) -> int:
    return parse(name, setting(name), int)


def float_setting(name: str) -> float:
    return parse(name, setting(name), float)


def bool_setting(name: str) -> bool:
    return parse(name, setting(name), bool)


def retry_settings() -> RetrySettings:
    """The in-step retry bounds (each HubSpot batch, Kaggle call and database chunk)."""
    # Imported here: retrying takes its defaults from this module.
    from etl_assets.retrying import RetrySettings

    return RetrySettings(attempts=int_setting(RETRY_ATTEMPTS), max_seconds=float_setting(RETRY_MAX_SECONDS))


def aws_region() -> str | None:
    """AWS_REGION, else AWS_DEFAULT_REGION (botocore reads only the latter, so callers pass it on)."""
    return setting(AWS_REGION) or setting(AWS_DEFAULT_REGION)


def data_dir() -> Path:
    """Where downloads, the dry-run outbox and the default SQLite file live: an owner-only folder."""
    explicit, home = setting(DATA_DIR), setting(DAGSTER_HOME)
    path = Path(explicit) if explicit else Path(home) / "etl_data" if home else Path(".etl")
    return private_dir(path).resolve()


# The README's tables, generated from the registry

README = Path(__file__).resolve().parents[1] / "README.md"
_TABLE = re.compile(
    r"(?P<start><!-- settings-table(?: group=\"(?P<group>[^\"]*)\")? -->\n)"
    r".*?(?P<end><!-- /settings-table -->)",
    re.DOTALL,
)
_GENERATED = (
    "<!-- generated from etl_assets/settings.py: edit there, then run "
    "`.venv/bin/python scripts/config_table.py --write-readme` -->"
)


def _label(entry: Setting) -> str:
    return f"`{entry.name}`" + (" *(secret)*" if entry.secret else "")


def markdown_table(group: str | None = None) -> str:
    """Every setting, under a bold row per group; or only `group`'s settings."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name in [group] if group is not None else dict.fromkeys(e.group for e in REGISTRY.values()):
        if group is None:
            lines.append(f"| **{name}** | | |")
        lines += [f"| {_label(e)} | {e.readme_default()} | {e.meaning} |" for e in REGISTRY.values() if e.group == name]
    return "\n".join(lines) + "\n"


def readme_with_tables(text: str) -> str:
    """`text` with every table between `<!-- settings-table [group="…"] -->` markers regenerated."""
    if not _TABLE.search(text):
        raise ValueError("no <!-- settings-table --> markers in the README")
    return _TABLE.sub(lambda m: f"{m['start']}{_GENERATED}\n\n{markdown_table(m['group'])}\n{m['end']}", text)


def main(argv: list[str]) -> int:
    """`scripts/config_table.py --write-readme` regenerates the README's tables; `--check`
    exits 1 when they differ; no argument prints the full table."""
    if not argv:
        sys.stdout.write(markdown_table())
        return 0
    text = README.read_text(encoding="utf-8")
    wanted = readme_with_tables(text)
    if argv == ["--check"]:
        return 0 if wanted == text else 1
    if argv == ["--write-readme"]:
        README.write_text(wanted, encoding="utf-8")
        return 0
    sys.stderr.write("usage: scripts/config_table.py [--write-readme | --check]\n")
    return 2
