"""Ship formatted log lines to Datadog's HTTP logs intake, in the background.

The same JSON lines as the file and CloudWatch outputs become the `message` of Datadog log
entries, each with `service` (etl_assets), `ddsource`, `hostname` and `ddtags` naming the run,
job, step and asset of the line (from Dagster's record metadata, as the JSON formatter reads
them), so `service:etl_assets run_id:<id>` finds a run without parsing text.

Client library: Datadog's official `datadog-api-client` (LogsApi.submit_log), not hand-written
HTTP. It is Datadog's own, generated from their API specification and released with it, so
the endpoint path, the DD-API-KEY header, the gzip Content-Encoding and the entry model follow
the API without us re-deriving them; the tests drive this same client against a local intake.
Two of its behaviours are replaced, on purpose:
- the host: the client validates `DD_SITE` against the sites it knew when it was released, so
  we build the URL ourselves (https://http-intake.logs.<site>) and hand it over as `host`;
  a new Datadog site then works without a client upgrade;
- retries: the client's own (enable_retry, off by default) sleep as long as X-Ratelimit-Reset
  says, without a bound, and urllib3 logs a warning for each retried connection (on stderr when
  nothing else handles it); ours are bounded (attempts, a cap on each wait, a deadline at close)
  and report one warning. urllib3's own retries are therefore off too.

What the intake accepts (Datadog's documentation of "Send logs", POST /api/v2/logs):
- at most 1,000 entries per request and 5 MB uncompressed per request (else 413); a log over
  1 MB is accepted and truncated (2xx). Whether "MB" means 10^6 or 2^20 bytes, and whether
  1 MB counts the whole entry or its message, is not stated (unverified): we use 10^6 bytes
  and count the whole entry as the client serialises it, the stricter reading both times,
  and truncate a longer entry's message ourselves so that it is never cut or refused there;
- answers: 202 accepted, 400 bad payload, 401 missing key, 403 bad key, 413 too large, and
  "retry after some time" for 408, 429, 500 and 503. We retry 408, 429 and every 5xx, and
  connection failures; 401/403 switch shipping off for the process (the key will not heal);
  a 413 (which our limits should never cause) splits the batch in two;
- timestamps up to 18 hours old: lines are buffered for seconds, never that long.

Shipping never fails the run and hardly slows it: `emit` only queues the line (a bounded
buffer; when it is full the oldest lines are dropped), a daemon thread sends full batches at
once and the rest every `flush_seconds`, and `flush`/`close` (logging.shutdown at exit, Dagster's
re-configuration) send what is left within `close_timeout`; once the intake has failed, each
batch gets a single attempt until one succeeds. A failure is reported once per process on
stderr, without the key, until shipping works again; lines that could not be sent are dropped.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from etl_assets import settings
from etl_assets.logs.json_format import record_context
from etl_assets.logs.redaction import redact, register_secret

LOGS_PATH = "/api/v2/logs"
SERVICE = "etl_assets"
# `ddsource` picks the integration pipeline Datadog applies; "python" is the usual one for a Python app.
SOURCE = "python"

MAX_BATCH_ENTRIES = 1000
MAX_BATCH_BYTES = 5_000_000  # uncompressed request body; 10^6-byte MB, the stricter reading
MAX_ENTRY_BYTES = 1_000_000  # one serialised entry; the stricter reading again
TRUNCATED_MARK = "...[truncated by etl_assets]"
# Datadog tags: letters, digits and _ - : . / (others become _ there; a comma would split a tag).
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:./]")
_MAX_TAG_CHARS = 200
_SITE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")
# Statuses worth another try: Datadog's "retry after some time" (408, 429, 500, 503) and the other 5xx.
_RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def intake_url(site: str | None = None, url: str | None = None) -> str:
    """The base URL the client posts /api/v2/logs to: an explicit URL (a local intake, a proxy),
    else the site's intake. `url` may name the endpoint itself (…/api/v2/logs) or its base."""
    if url:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"{settings.DATADOG_LOGS_URL} must be an http(s) URL, e.g. http://127.0.0.1:8282/api/v2/logs"
            )
        path = parts.path.rstrip("/")
        if path.endswith(LOGS_PATH):
            path = path[: -len(LOGS_PATH)]
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    site = (site or settings.default_value(settings.DD_SITE)).strip().lower()
    if not _SITE.match(site):
        raise ValueError(
            f"{settings.DD_SITE} must be a Datadog site such as datadoghq.com, us3.datadoghq.com or "
            f"datadoghq.eu (the part after app. in your Datadog URL), got {site!r}"
        )
    return f"https://http-intake.logs.{site}"


def ddtags(record: logging.LogRecord) -> str:
    """`run_id:…,job:…,step:…,asset:…` for the fields the record has."""
    tags = []
    for name, value in record_context(record).items():
        if value:
            tags.append(_TAG_UNSAFE.sub("_", f"{name}:{value}")[:_MAX_TAG_CHARS])
    return ",".join(tags)


def serialized_size(entry: dict) -> int:
    """Bytes of the entry in the request body, as the client writes it (json.dumps: ASCII, ", ")."""
    return len(json.dumps(entry))


def fit_entry(entry: dict, limit: int = MAX_ENTRY_BYTES) -> dict:
    """The entry, its message cut (and marked) so that the serialised entry is at most `limit` bytes."""
    if serialized_size(entry) <= limit:
        return entry
    overhead = serialized_size({**entry, "message": TRUNCATED_MARK})
    budget = limit - overhead
    escaped = json.dumps(entry["message"])[1:-1]
    cut = escaped[: max(budget, 0)]
    while cut:  # do not end inside an escape sequence (\", \\, \uXXXX)
        try:
            message = json.loads(f'"{cut}"')
            break
        except json.JSONDecodeError:
            cut = cut[:-1]
    else:
        message = ""
    if message and "\ud800" <= message[-1] <= "\udbff":  # half of a surrogate pair
        message = message[:-1]
    return {**entry, "message": message + TRUNCATED_MARK}


@dataclass
class _Health:
    """Shared by every handler of one process that ships to the same intake with the same key:
    Dagster re-creates its handlers several times per run, the warning must still come once."""

    failing: bool = False  # the last batch was lost: later ones get one attempt, not retries
    warned: bool = False  # a warning is out for the current failure
    rejected: bool = False  # 401/403: this key is not accepted here; shipping is off


_health_lock = threading.Lock()
_health: dict[tuple[str, str], _Health] = {}


def _health_for(url: str, api_key: str) -> _Health:
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:16]  # not the key itself
    with _health_lock:
        return _health.setdefault((url, fingerprint), _Health())


class _Rejected(Exception):
    pass


# Every handler of the process, for a last send at exit. logging.shutdown is not enough: Dagster
# re-runs logging.config.dictConfig whenever it builds a log manager, which closes the handlers
# built before and drops them from logging's own list, yet a run's earlier log manager keeps
# handing them records (PIPELINE_SUCCESS among them). A handler with lines waiting has a live
# sender thread, which keeps it in this weak set.
_handlers: weakref.WeakSet = weakref.WeakSet()


def _holding_loggings_lock() -> bool:
    """Whether this thread holds logging's module lock, as logging.config.dictConfig does while it
    closes the handlers (Dagster re-configures for every log manager it builds). The sender thread
    may need that lock to finish its request (urllib3 logs each answer), so close() must not wait
    for it then; the exit hook's close() does. `_lock` is private: without it we wait, as before."""
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    return bool(is_owned and is_owned())


@atexit.register
def _send_the_rest_at_exit() -> None:
    for handler in list(_handlers):
        handler.close()


class DatadogLogsHandler(logging.Handler):
    def __init__(
        self,
        api_key: str,
        url: str,
        *,
        service: str = SERVICE,
        source: str = SOURCE,
        hostname: str | None = None,
        flush_seconds: float = 5.0,
        max_buffer_lines: int = 20_000,
        max_buffer_bytes: int = 50_000_000,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 10.0,
        request_timeout: tuple[float, float] = (5.0, 30.0),
        close_timeout: float = 30.0,
    ):
        super().__init__()
        if not api_key:
            raise ValueError("DatadogLogsHandler needs an API key")
        register_secret(api_key)  # a last line of defence, as for every secret (SecretsResource does it too)
        self._api_key, self.url = api_key, url
        self.service, self.source = service, source
        self.hostname = hostname or socket.gethostname()
        self.flush_seconds, self.close_timeout = flush_seconds, close_timeout
        self.max_buffer_lines, self.max_buffer_bytes = max_buffer_lines, max_buffer_bytes
        self.max_attempts, self.backoff_seconds, self.max_backoff_seconds = (
            max_attempts,
            backoff_seconds,
            max_backoff_seconds,
        )
        self.request_timeout = request_timeout
        self._health = _health_for(url, api_key)
        self._cond = threading.Condition()
        self._pending: deque[tuple[dict, int]] = deque()  # (entry, serialised size)
        self._pending_bytes = 0
        self._dropped = 0  # lines dropped from a full buffer, reported with the next warning
        # The sender thread, the process it runs in, and its stop signal. Nothing of ours is locked
        # while a request is in flight, so the thread and flush/close may each send a batch.
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._thread_stop: threading.Event | None = None
        self._stopped_threads: list[threading.Thread] = []  # stopped by close(), perhaps mid-request
        self._api = None
        self._rejected_cause = ""
        _handlers.add(self)

    # logging.Handler

    def emit(self, record: logging.LogRecord) -> None:
        if self._health.rejected:
            return
        try:
            message = self.format(record)
            entry = {"message": message, "ddsource": self.source, "hostname": self.hostname, "service": self.service}
            tags = ddtags(record)
            if tags:  # none outside a run
                entry["ddtags"] = tags
            entry = fit_entry(entry)
        except Exception:
            self.handleError(record)
            return
        size = serialized_size(entry)
        with self._cond:
            self._pending.append((entry, size))
            self._pending_bytes += size
            while len(self._pending) > self.max_buffer_lines or self._pending_bytes > self.max_buffer_bytes:
                _, dropped_size = self._pending.popleft()  # the oldest go first
                self._pending_bytes -= dropped_size
                self._dropped += 1
            if self._full_batch_waiting():
                self._cond.notify_all()
        self._ensure_thread()

    def flush(self) -> None:
        """Send everything queued now, in this thread (logging.shutdown calls it before close)."""
        self._ship(everything=True, deadline=time.monotonic() + self.close_timeout)

    def close(self) -> None:
        # Process exit and Dagster's logging re-configuration: stop the thread, let it finish its
        # batch in flight, send the rest here. Dagster may still hand the closed handler records;
        # `emit` then starts a new thread, and the exit hook sends what they leave.
        with self._cond:
            thread, stop = self._thread, self._thread_stop
            self._thread = self._thread_stop = None
            if stop is not None:
                stop.set()
            if thread is not None and self._thread_pid == os.getpid():
                self._stopped_threads = [t for t in self._stopped_threads if t.is_alive()] + [thread]
            self._cond.notify_all()
        if not _holding_loggings_lock():
            self._wait_for_stopped_senders()
        self._ship(everything=True, deadline=time.monotonic() + self.close_timeout)
        if self._dropped:
            self._report(0, "the buffer was full")
        super().close()

    def _wait_for_stopped_senders(self) -> None:
        """Let the threads close() stopped finish their batches in flight (within close_timeout)."""
        deadline = time.monotonic() + self.close_timeout
        with self._cond:
            threads, self._stopped_threads = self._stopped_threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0))

    # the background sender

    def _ensure_thread(self) -> None:
        pid = os.getpid()  # a forked process inherits the handler but not its thread
        if self._thread is not None and self._thread_pid == pid and self._thread.is_alive():
            return
        with self._cond:
            if self._thread is not None and self._thread_pid == pid and self._thread.is_alive():
                return
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(stop,), name="etl_assets-datadog-logs", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: the exit hook sends what is queued
                return
            self._thread, self._thread_pid, self._thread_stop = thread, pid, stop

    def _run(self, stop: threading.Event) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        while True:
            with self._cond:
                while not stop.is_set() and not self._full_batch_waiting() and time.monotonic() < next_flush:
                    self._cond.wait(max(next_flush - time.monotonic(), 0.01))
                if stop.is_set():
                    return
            due = time.monotonic() >= next_flush
            try:
                self._ship(everything=due, deadline=float("inf"))
            except Exception as exc:  # never let the thread die silently
                self._report(0, f"{type(exc).__name__}: {exc}")
            if due:
                next_flush = time.monotonic() + self.flush_seconds

    def _full_batch_waiting(self) -> bool:
        # (caller holds the condition) 2 bytes for "[]", 2 per ", " between entries
        return (
            len(self._pending) >= MAX_BATCH_ENTRIES or self._pending_bytes + 2 * len(self._pending) >= MAX_BATCH_BYTES
        )

    def _take_batch(self, everything: bool) -> list[dict]:
        """The oldest lines that fit one request; with `everything` False, only a full request's worth."""
        with self._cond:
            taken: list[tuple[dict, int]] = []
            size = 2  # "[" and "]"
            while self._pending and len(taken) < MAX_BATCH_ENTRIES:
                entry_size = self._pending[0][1]
                if taken and size + 2 + entry_size > MAX_BATCH_BYTES:  # 2: the ", " before it
                    break
                taken.append(self._pending.popleft())
                self._pending_bytes -= entry_size
                size += entry_size + (2 if len(taken) > 1 else 0)
            full = len(taken) == MAX_BATCH_ENTRIES or bool(self._pending)
            if taken and not everything and not full:  # a partial batch waits for the flush interval
                self._pending.extendleft(reversed(taken))
                self._pending_bytes += sum(entry_size for _, entry_size in taken)
                return []
            return [entry for entry, _ in taken]

    def _ship(self, everything: bool, deadline: float) -> None:
        while not self._health.rejected:
            batch = self._take_batch(everything)
            if not batch:
                return
            try:
                self._send(batch, deadline)
            except _Rejected:
                with self._cond:
                    lost = len(self._pending)
                    self._pending.clear()
                    self._pending_bytes = 0
                self._report(len(batch) + lost, self._rejected_cause)
                return

    # one request, retried

    def _client(self):
        if self._api is None:
            # Loaded only when shipping is configured.
            import urllib3
            from datadog_api_client import ApiClient, Configuration
            from datadog_api_client.v2.api.logs_api import LogsApi

            config = Configuration(
                host=self.url, api_key={"apiKeyAuth": self._api_key}, request_timeout=self.request_timeout
            )
            config.retry_policy = urllib3.util.Retry(total=0, redirect=0, raise_on_status=False)  # ours instead
            self._api = LogsApi(ApiClient(config))
        return self._api

    def _post(self, batch: list[dict]) -> None:
        from datadog_api_client.v2.model.content_encoding import ContentEncoding
        from datadog_api_client.v2.model.http_log import HTTPLog
        from datadog_api_client.v2.model.http_log_item import HTTPLogItem

        body = HTTPLog([HTTPLogItem(**entry) for entry in batch])
        self._client().submit_log(body=body, content_encoding=ContentEncoding.GZIP)

    def _send(self, batch: list[dict], deadline: float) -> None:
        from datadog_api_client.exceptions import ApiException

        attempts = 1 if self._health.failing else self.max_attempts
        cause = ""
        for attempt in range(attempts):
            wait = min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds)
            try:
                self._post(batch)
            except ApiException as exc:
                status = exc.status or 0
                cause = f"Datadog answered {status} {exc.reason or ''}".strip()
                if status in (401, 403):
                    self._health.rejected = True
                    self._rejected_cause = (
                        f"{cause}: the API key was {'refused' if status == 403 else 'missing'}"
                        f" ({settings.DATADOG_API_KEY}; a key belongs to one site, "
                        f"see {settings.DD_SITE});"
                        " shipping to Datadog is off for this process"
                    )
                    raise _Rejected() from None
                if status == 413 and len(batch) > 1:  # our limits should prevent it; halve and go on
                    half = len(batch) // 2
                    self._send(batch[:half], deadline)
                    self._send(batch[half:], deadline)
                    return
                if status not in _RETRY_STATUSES:
                    break
                wait = self._retry_after(exc, wait)
            except Exception as exc:  # unreachable, reset, timed out (urllib3 raises these as they come)
                reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the connection error
                shown = reason if isinstance(reason, BaseException) else exc
                cause = f"{type(shown).__name__}: {shown}"
            else:
                with _health_lock:
                    self._health.failing = self._health.warned = False
                return
            if attempt + 1 >= attempts or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
        self._health.failing = True
        self._report(len(batch), cause)

    def _retry_after(self, exc, default: float) -> float:
        """Datadog's X-Ratelimit-Reset (seconds) or Retry-After, capped like the backoff."""
        headers = getattr(exc, "headers", None) or {}
        for name in ("X-Ratelimit-Reset", "Retry-After"):
            value = headers.get(name) if hasattr(headers, "get") else None
            try:
                return min(max(float(str(value)), 0.0), self.max_backoff_seconds)
            except (TypeError, ValueError):
                continue
        return default

    def _report(self, lines: int, cause: str) -> None:
        """One warning on stderr per failure (not per batch or retry); never the key."""
        with _health_lock:
            if self._health.warned:
                self._dropped = 0
                return
            self._health.warned = True
        dropped, self._dropped = self._dropped, 0
        lost = lines + dropped
        text = (
            f"etl_assets: could not ship {lost} log lines to Datadog ({self.url}): {cause}. "
            "The run carries on; further Datadog shipping failures of this process are not reported "
            "until shipping works again."
        )
        try:
            sys.stderr.write(redact(text).replace(self._api_key, "***") + "\n")
            sys.stderr.flush()
        except Exception:
            pass
