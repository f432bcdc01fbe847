"""The public configuration contract: environment variable names and their defaults.

Values are read when a run needs them (through `dg.EnvVar`), never at import time, so the
webserver and daemon load this code location with nothing configured. The exceptions are
the schedule and retry settings, which Dagster needs when it loads the definitions.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from etl_assets.errors import PermanentError
from etl_assets.files import private_dir
from etl_assets.retrying import RetrySettings

KAGGLE_DATASET = "KAGGLE_DATASET"
KAGGLE_FILE = "KAGGLE_FILE"
DATABASE_URL = "ETL_DATABASE_URL"
DATABASE_PASSWORD = "ETL_DATABASE_PASSWORD"
HUBSPOT_ACCESS_TOKEN = "HUBSPOT_ACCESS_TOKEN"
HUBSPOT_API_BASE = "HUBSPOT_API_BASE"
COLUMN_MAP = "ETL_COLUMN_MAP"
SCHEDULE_CRON = "ETL_SCHEDULE_CRON"
SCHEDULE_TZ = "ETL_SCHEDULE_TZ"
DATA_DIR = "ETL_DATA_DIR"
STEP_RETRIES = "ETL_STEP_RETRIES"
STEP_RETRY_DELAY = "ETL_STEP_RETRY_DELAY_SECONDS"
ALERT_WEBHOOK_URL = "ETL_ALERT_WEBHOOK_URL"
RETRY_ATTEMPTS = "ETL_RETRY_ATTEMPTS"
RETRY_MAX_SECONDS = "ETL_RETRY_MAX_SECONDS"
MAX_REJECT_RATE = "ETL_MAX_REJECT_RATE"
HUBSPOT_RATE_LIMIT = "HUBSPOT_RATE_LIMIT"
HUBSPOT_MAX_IN_FLIGHT = "HUBSPOT_MAX_IN_FLIGHT"
HUBSPOT_CREATE_PROPERTIES = "HUBSPOT_CREATE_PROPERTIES"
HUBSPOT_MAX_FAILED_RATE = "HUBSPOT_MAX_FAILED_RATE"
HUBSPOT_DRY_RUN = "HUBSPOT_DRY_RUN"
SOURCE_ENCODING = "ETL_SOURCE_ENCODING"
SOURCE_DELIMITER = "ETL_SOURCE_DELIMITER"
MAX_DELETE_FRACTION = "ETL_MAX_DELETE_FRACTION"
ALLOW_MASS_DELETE = "ETL_ALLOW_MASS_DELETE"
MAX_SOURCE_BYTES = "ETL_MAX_SOURCE_BYTES"
DATABASE_SSL_CA = "ETL_DATABASE_SSL_CA"
DATABASE_SSL_CERT = "ETL_DATABASE_SSL_CERT"
DATABASE_SSL_KEY = "ETL_DATABASE_SSL_KEY"
OUTBOX_MAX_AGE_DAYS = "ETL_OUTBOX_MAX_AGE_DAYS"
# Datadog logs (etl_assets/logs/datadog.py): the API key is a secret (read through SecretsResource);
# DD_SITE is the Datadog agent's and client's own name; the URL only points at a local intake or a proxy
DATADOG_API_KEY = "ETL_DATADOG_API_KEY"
DD_SITE = "DD_SITE"
DATADOG_LOGS_URL = "ETL_DATADOG_LOGS_URL"
# Secrets backends (ETL_SECRETS_BACKEND=vault | gcp); the VAULT_* names are Vault's own (its CLI's)
VAULT_ADDR = "VAULT_ADDR"
VAULT_TOKEN = "VAULT_TOKEN"
VAULT_TOKEN_FILE = "VAULT_TOKEN_FILE"
VAULT_ROLE_ID = "VAULT_ROLE_ID"
VAULT_SECRET_ID_FILE = "VAULT_SECRET_ID_FILE"
VAULT_CACERT = "VAULT_CACERT"
VAULT_MOUNT = "ETL_VAULT_MOUNT"
VAULT_PATH = "ETL_VAULT_PATH"
GCP_PROJECT = "ETL_GCP_PROJECT"
GCP_SECRET_ID = "ETL_GCP_SECRET_ID"
GCP_SECRET_PREFIX = "ETL_GCP_SECRET_PREFIX"
GCP_SECRETS_ENDPOINT = "ETL_GCP_SECRETS_ENDPOINT"

DEFAULTS: dict[str, str] = {
    HUBSPOT_API_BASE: "https://api.hubapi.com",
    SCHEDULE_CRON: "0 6 * * *",
    SCHEDULE_TZ: "UTC",
    STEP_RETRIES: "3",
    STEP_RETRY_DELAY: "120",  # with 3 step retries, an outage of up to ~17 minutes is ridden out (README)
    RETRY_ATTEMPTS: "6",
    RETRY_MAX_SECONDS: "180",
    MAX_REJECT_RATE: "0.05",
    HUBSPOT_RATE_LIMIT: "100",
    HUBSPOT_MAX_IN_FLIGHT: "4",
    HUBSPOT_CREATE_PROPERTIES: "true",
    HUBSPOT_MAX_FAILED_RATE: "0.01",
    HUBSPOT_DRY_RUN: "false",
    SOURCE_ENCODING: "utf-8",
    MAX_DELETE_FRACTION: "0.1",
    ALLOW_MASS_DELETE: "false",
    MAX_SOURCE_BYTES: str(4 * 2**30),  # 4 GiB
    OUTBOX_MAX_AGE_DAYS: "30",
    DD_SITE: "datadoghq.com",
    VAULT_MOUNT: "secret",
}


def setting(name: str) -> str | None:
    """The variable's value, or its documented default; blank counts as unset."""
    value = dg.EnvVar(name).get_value()
    if value is None or not value.strip():
        return DEFAULTS.get(name)
    return value.strip()


def _typed_setting(name: str, kind: type, description: str):
    raw = setting(name)
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise PermanentError(f"{name} must be {description}, got {raw!r}") from None


def int_setting(name: str) -> int:
    return _typed_setting(name, int, "a whole number")


def float_setting(name: str) -> float:
    return _typed_setting(name, float, "a number")


def bool_setting(name: str) -> bool:
    raw = (setting(name) or "").lower()
    if raw not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise PermanentError(f"{name} must be true or false, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


def retry_settings() -> RetrySettings:
    """The in-step retry bounds (each HubSpot batch, Kaggle call and database chunk)."""
    return RetrySettings(attempts=int_setting(RETRY_ATTEMPTS), max_seconds=float_setting(RETRY_MAX_SECONDS))


def data_dir() -> Path:
    """Where downloads, the dry-run outbox and the default SQLite file live: an owner-only folder."""
    explicit = setting(DATA_DIR)
    if explicit:
        path = Path(explicit)
    elif os.environ.get("DAGSTER_HOME"):
        path = Path(os.environ["DAGSTER_HOME"]) / "etl_data"
    else:
        path = Path(".etl")
    return private_dir(path).resolve()
