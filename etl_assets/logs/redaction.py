"""The last line of defence against a secret in a log line: replace every known value with ***.

Secrets must not reach a message in the first place (resources mask URLs and raise without
values); this catches what slips through. SecretsResource registers each value it reads, so
the filter knows exactly what to look for. Credentials with a recognisable shape are masked
whether registered or not: a password in a URL, a signed URL's signature, a bearer token.

The registry is per process: it covers the step processes, which read the secrets, but not
Dagster's run-level process, which reports a run's failure with the failing step's error
text. So error messages must be clean at the source; the leak test checks that they are.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words ("root", "test") all over the logs.
MIN_LENGTH = 4

# (pattern, replacement) for credentials recognisable without being registered.
_SHAPES = [
    (re.compile(r"(://[^:/@\s]*:)[^/\s]*@"), r"\1***@"),  # user:password@ in a URL (greedy: "@" may be in it)
    (
        re.compile(
            r"([?&](?:x-goog-signature|x-goog-credential|x-amz-signature|x-amz-credential|x-amz-security-token"
            r"|signature|sig|token|access_token|api_key|apikey|key|password|secret)=)[^&\s#\"']+",
            re.IGNORECASE,
        ),
        r"\1***",
    ),
    (re.compile(r"(\bBearer\s+)[\w.~+/=-]+"), r"\1***"),
]

_lock = threading.Lock()
_values: list[str] = []  # longest first, so a value containing another is masked whole
_factory_installed = False


def register_secret(value: str | None) -> None:
    """Mask `value` (and the forms it takes in URLs and JSON) in every later log record."""
    if not value or len(value) < MIN_LENGTH:
        return
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    with _lock:
        for form in forms - set(_values):
            _values.append(form)
        _values.sort(key=len, reverse=True)
    _install_record_factory()


def redact(text: str) -> str:
    for value in _values:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback and Dagster metadata without the known secret values."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format: leave it to the handler's own error path
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        meta = getattr(record, "dagster_meta", None)  # Dagster's copy of the message, used by formatters
        if isinstance(meta, dict) and isinstance(meta.get("orig_message"), str):
            meta["orig_message"] = redact(meta["orig_message"])
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _install_record_factory() -> None:
    """Redact every record as it is created, before any handler (Dagster's event log included) sees it.

    Handler filters only guard the handler they sit on, and Dagster hands each record to its
    event-log handler before the ones configured in dagster.yaml.
    """
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()
        redactor = RedactSecrets()

        def redacting_factory(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redactor.filter(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _factory_installed = True
