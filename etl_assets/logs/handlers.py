"""Where run logs go, built from the environment when Dagster sets up a run's logging.

- stderr: always, through the job's `console` logger (it replaces Dagster's coloured text
  logger, so stderr carries only JSON lines).
- ETL_LOG_FILE: a size-rotated file; ETL_CLOUDWATCH_LOG_GROUP: CloudWatch Logs. Both are
  handlers in dagster.yaml (`python_logs: dagster_handler_config`), which Dagster feeds every
  event and message of a run. Unset, they are NullHandlers, so one dagster.yaml serves all.
- ETL_LOG_LEVEL (default INFO) is the threshold of all three.
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

from etl_assets.logs.cloudwatch import CloudWatchLogsHandler
from etl_assets.logs.json_format import JsonFormatter
from etl_assets.logs.redaction import RedactSecrets

LOG_LEVEL = "ETL_LOG_LEVEL"
LOG_FILE = "ETL_LOG_FILE"
CLOUDWATCH_LOG_GROUP = "ETL_CLOUDWATCH_LOG_GROUP"
CLOUDWATCH_LOG_STREAM = "ETL_CLOUDWATCH_LOG_STREAM"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def log_level(raw: str | None = None) -> int:
    name = (raw or _env(LOG_LEVEL) or "INFO").upper()
    if name not in _LEVELS:
        raise ValueError(f"{LOG_LEVEL} must be one of {', '.join(_LEVELS)}, got {name!r}")
    return logging.getLevelName(name)


def _leveled(handler: logging.Handler, level: str | None = None) -> logging.Handler:
    handler.setLevel(log_level(level))
    return handler


def stderr_handler(level: str | None = None) -> logging.Handler:
    handler = _leveled(logging.StreamHandler(sys.stderr), level)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    return handler


def file_handler(path: str | None = None, max_bytes: int = 10_000_000, backup_count: int = 5) -> logging.Handler:
    path = path or _env(LOG_FILE)
    if not path:
        return logging.NullHandler()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # delay: the file is opened by the first line, not by every process that merely loads the config
    return _leveled(logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True))


def cloudwatch_handler(log_group: str | None = None, log_stream: str | None = None) -> logging.Handler:
    group = log_group or _env(CLOUDWATCH_LOG_GROUP)
    if not group:
        return logging.NullHandler()
    stream = log_stream or _env(CLOUDWATCH_LOG_STREAM) or f"etl_assets/{socket.gethostname()}"
    return _leveled(CloudWatchLogsHandler(group, stream))


@dg.logger(
    # A default value, so Dagster builds this logger without run config (it only builds the
    # loggers the run config names, else falls back to its coloured console logger).
    config_schema={"log_level": dg.Field(str, default_value="",
                                         description=f"Threshold; empty means {LOG_LEVEL}, then INFO.")},
    description="JSON lines on stderr (replaces Dagster's default coloured console logger).",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = init_context.logger_config.get("log_level")
    # Not logging.getLogger: a private logger per run, so handlers do not pile up across runs.
    logger = logging.Logger("etl_assets", level=log_level(level))
    logger.addHandler(stderr_handler(level))
    return logger
