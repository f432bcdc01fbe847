"""Where run logs go, built from the environment when Dagster sets up a run's logging.

- stderr: always, through the job's `console` logger, which replaces Dagster's coloured text
  logger. (Dagster still writes a few lines of its own there before a run's loggers exist:
  warnings, and each step worker's STEP_WORKER_STARTED; the file and CloudWatch get only JSON.)
- ETL_LOG_FILE: a size-rotated file; ETL_CLOUDWATCH_LOG_GROUP: CloudWatch Logs; the secret
  ETL_DATADOG_API_KEY: Datadog (DD_SITE, ETL_DATADOG_LOGS_URL). They are handlers in dagster.yaml
  (`python_logs: dagster_handler_config`), which Dagster feeds every event and message of a run.
  Unset, they are NullHandlers, so one dagster.yaml serves all.
- ETL_LOG_LEVEL (default INFO) is the threshold of all three. Dagster logs its events (step
  started, asset materialized...) at DEBUG; they count as INFO here, so the default shows a
  run's progress and DEBUG adds only debug messages.
Every handler carries the RedactSecrets filter and the JSON formatter (dagster.yaml names them
for its handlers; the console logger attaches them here).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys

import dagster as dg

from etl_assets import settings
from etl_assets.logs.json_format import JsonFormatter
from etl_assets.logs.redaction import RedactSecrets
from etl_assets.settings import (
    CLOUDWATCH_LOG_GROUP,
    CLOUDWATCH_LOG_STREAM,
    DATADOG_API_KEY,
    DATADOG_LOGS_URL,
    DD_SITE,
    LOG_FILE,
    LOG_LEVEL,
)

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(raw: str | None = None) -> int:
    name = (raw or settings.value(LOG_LEVEL)).upper()
    if name not in _LEVELS:
        raise ValueError(f"{LOG_LEVEL} must be one of {', '.join(_LEVELS)}, got {name!r}")
    return logging.getLevelName(name)


class LevelThreshold(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None)
        is_event = isinstance(meta, dict) and meta.get("dagster_event") is not None
        return max(record.levelno, logging.INFO if is_event else logging.NOTSET) >= self.level


def _with_threshold(handler: logging.Handler, level: str | None = None) -> logging.Handler:
    # The threshold is a filter, not the handler's level: Dagster drops records below a
    # handler's level before its filters could count an event as INFO.
    handler.addFilter(LevelThreshold(log_level(level)))
    return handler


def stderr_handler(level: str | None = None) -> logging.Handler:
    handler = _with_threshold(logging.StreamHandler(sys.stderr), level)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    return handler


def file_handler(path: str | None = None, max_bytes: int = 10_000_000, backup_count: int = 5) -> logging.Handler:
    path = path or settings.setting(LOG_FILE)
    if not path:
        return logging.NullHandler()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # delay: the file is opened by the first line, not by every process that merely loads the config
    return _with_threshold(
        logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
        )
    )


_cloudwatch_warnings: set[str] = set()


def cloudwatch_handler(log_group: str | None = None, log_stream: str | None = None) -> logging.Handler:
    group = log_group or settings.setting(CLOUDWATCH_LOG_GROUP)
    if not group:
        return logging.NullHandler()
    stream = log_stream or settings.setting(CLOUDWATCH_LOG_STREAM) or f"etl_assets/{socket.gethostname()}"
    from etl_assets.logs.cloudwatch import CloudWatchLogsHandler  # boto3 and watchtower load only when shipping

    try:
        handler = CloudWatchLogsHandler(group, stream)
    except Exception as exc:  # no region, a broken AWS config file: one warning, the run goes on without it
        warning = f"etl_assets: log shipping to CloudWatch Logs is off: {type(exc).__name__}: {exc}"
        if warning not in _cloudwatch_warnings:  # Dagster builds the handlers several times per process
            _cloudwatch_warnings.add(warning)
            sys.stderr.write(warning + "\n")
        return logging.NullHandler()
    return _with_threshold(handler)


_datadog_warnings: set[str] = set()


def _datadog_api_key() -> str | None:
    """ETL_DATADOG_API_KEY from the deployment's secrets backend (env, files, AWS...), like every
    secret. Dagster builds these handlers from dagster.yaml outside any run context, so the
    resource is made here (it needs none); reading the key registers it with redaction."""
    from etl_assets.resources.secrets import SecretsResource  # not at import: resources load logging

    return SecretsResource().get(DATADOG_API_KEY)


def datadog_handler(
    api_key: str | None = None, site: str | None = None, url: str | None = None, **options
) -> logging.Handler:
    """Datadog's HTTP logs intake when the ETL_DATADOG_API_KEY secret is set, else a NullHandler.

    A key that cannot be read (an unreachable secrets backend) or a malformed DD_SITE /
    ETL_DATADOG_LOGS_URL is one warning on stderr, and the run goes on without Datadog."""
    from etl_assets.logs.datadog import DatadogLogsHandler, intake_url
    from etl_assets.logs.redaction import redact

    try:
        key = api_key or _datadog_api_key()
        if not key:
            return logging.NullHandler()
        target = intake_url(site or settings.setting(DD_SITE), url or settings.setting(DATADOG_LOGS_URL))
    except Exception as exc:  # the secrets backend raises without values; redact anyway
        warning = redact(f"etl_assets: log shipping to Datadog is off: {exc}")
        if warning not in _datadog_warnings:  # Dagster builds the handlers several times per process
            _datadog_warnings.add(warning)
            sys.stderr.write(warning + "\n")
        return logging.NullHandler()
    return _with_threshold(DatadogLogsHandler(key, target, **options))


@dg.logger(
    # Dagster builds only the loggers a run's config names (else its coloured text logger);
    # daily_etl's default config names `console` with no fields, hence a default here.
    config_schema={
        "log_level": dg.Field(
            str,
            default_value="",
            description=f"Threshold; empty means {LOG_LEVEL}, then {settings.default(LOG_LEVEL)}.",
        )
    },
    description="JSON lines on stderr (replaces Dagster's default coloured console logger).",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = init_context.logger_config.get("log_level")
    # Not logging.getLogger: a private logger per run, so handlers do not pile up across runs.
    # No level of its own: the handler's threshold decides (see LevelThreshold).
    logger = logging.Logger("etl_assets")
    logger.addHandler(stderr_handler(level))
    return logger
