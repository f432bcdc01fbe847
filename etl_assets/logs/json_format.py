"""One JSON object per log line, for Dagster's own events and our messages alike.

Dagster hands its handlers records carrying `dagster_meta` (run id, job, step key, the original
message and, for events, the DagsterEvent); the fields below come from there, so a query such
as `run_id = X and level = "ERROR"` finds a failure without reading free text.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from etl_assets.errors import exception_cause, failure_cause
from etl_assets.logs.redaction import redact

MAX_ERROR_CHARS = 4000


def _asset(event, step_key: str | None) -> str | None:
    key = None
    if event is not None:
        key = event.asset_key or getattr(event.event_specific_data, "asset_key", None)
    if key is not None:
        return key.to_user_string()
    # Other lines of a step: its key, which for an asset's step is the asset's name (a check's
    # step is named <asset>_<check>).
    return step_key


def _error(event, record: logging.LogRecord) -> tuple[str, str] | None:
    """The root cause, not Dagster's retry or step wrapper (see etl_assets.errors.root_cause)."""
    cause = failure_cause(event.event_specific_data) if event is not None else None
    if cause is None and record.exc_info and record.exc_info[1] is not None:
        cause = exception_cause(record.exc_info[1])
    return cause


def _counts(event) -> dict[str, int | float]:
    """Numeric metadata of a materialization, observation or check (rows read, contacts created...)."""
    data = event.event_specific_data if event is not None else None
    source = getattr(data, "materialization", None) or getattr(data, "asset_observation", None) or data
    metadata = getattr(source, "metadata", None) or {}
    counts = {}
    for name, entry in metadata.items():
        value = getattr(entry, "value", entry)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            counts[name] = value
    return counts


def record_context(record: logging.LogRecord) -> dict[str, str | None]:
    """The run, job, step and asset a record belongs to (None outside a run); the Datadog tags too."""
    meta = getattr(record, "dagster_meta", None) or {}
    return {
        "run_id": meta.get("run_id"),
        "job": meta.get("job_name"),
        "step": meta.get("step_key"),
        "asset": _asset(meta.get("dagster_event"), meta.get("step_key")),
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            **record_context(record),
            "event": event.event_type_value if event is not None else "LOG_MESSAGE",
            "message": meta["orig_message"] if "orig_message" in meta else record.getMessage(),
        }
        counts = _counts(event)
        if counts:
            entry["counts"] = counts
        error = _error(event, record)
        if error:
            entry["error_class"], entry["error"] = error[0], error[1][:MAX_ERROR_CHARS]
        # The filter has cleaned the message; the event's error text is read here, so clean it too.
        return json.dumps(
            {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}, ensure_ascii=False, default=str
        )
