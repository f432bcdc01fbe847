"""A local Datadog HTTP logs intake (POST /api/v2/logs) for tests.

No machine here reaches http-intake.logs.datadoghq.com, so the log shipping is tested against
this server through the *real* ``datadog-api-client`` (its ``host`` pointed here). Behaviour
follows Datadog's documentation of "Send logs" (v2):

* ``DD-API-KEY`` header: missing → 401, not the server's key → 403 (checked first).
* ``Content-Encoding: gzip`` or ``deflate`` decoded (undecodable → 400); identity accepted.
* Limits: more than 5 MB uncompressed → 413; more than 1,000 entries → 413; an entry over
  1 MB is accepted and its ``message`` truncated (the request still answers 202).
  Unverified in the documentation, so the stricter reading is modelled: MB = 10^6 bytes,
  an entry's size is its whole compact UTF-8 JSON, and an over-long array is refused with 413.
* Body: a JSON array of objects, else 400 (Datadog also takes a single object; a client of
  ours never sends one, so refusing it is the stricter model).
* 202 with ``{}`` on success; errors carry Datadog's ``{"errors": [...]}`` shape.
* Scripted answers for the next requests (``fail_next``): 408, 429 (with ``X-Ratelimit-Reset``
  when asked), 500, 503..., after the key check, as an overloaded intake would answer.

Not modelled: the 18-hour timestamp window, ``ddtags`` as a query parameter, the key as a
``dd-api-key`` query parameter, other endpoints (404).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DatadogIntake", "IntakeRequest"]

LOGS_PATH = "/api/v2/logs"
MAX_BODY_BYTES = 5_000_000
MAX_ENTRIES = 1000
MAX_ENTRY_BYTES = 1_000_000
DEFAULT_KEY = "dd-intake-test-key-0000"


@dataclass
class IntakeRequest:
    status: int
    encoding: str  # Content-Encoding as sent ("" for none)
    raw_bytes: int  # the body as sent (compressed)
    body: bytes  # the decoded body (empty when it could not be decoded)
    entries: list[dict] = field(default_factory=list)  # as stored (accepted requests only)
    truncated: list[int] = field(default_factory=list)  # indices of entries the intake had to cut


def _compact_size(entry: Any) -> int:
    return len(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _truncate(entry: dict) -> dict:
    """Cut the message so that the compact entry fits MAX_ENTRY_BYTES, as Datadog does."""
    message = entry.get("message")
    if not isinstance(message, str):
        return entry
    excess = _compact_size(entry) - MAX_ENTRY_BYTES
    encoded = message.encode("utf-8")
    cut = encoded[: max(len(encoded) - excess - 16, 0)].decode("utf-8", "ignore")
    return {**entry, "message": cut}


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.server.intake._serve(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.intake._write(self, 404, {"errors": [{"status": "404", "title": "Not Found"}]})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, intake: DatadogIntake) -> None:
        self.intake = intake
        super().__init__((intake.host, intake.port), _Handler)


class DatadogIntake:
    def __init__(self, api_key: str = DEFAULT_KEY, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key, self.host, self.port = api_key, host, port
        self._lock = threading.Lock()
        self._script: deque[tuple[int, dict[str, str]]] = deque()
        self.requests: list[IntakeRequest] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._answering = threading.Event()  # cleared by hold_answers(): requests wait at the server
        self._answering.set()
        self.waiting = 0  # requests received and held

    # lifecycle

    def start(self) -> DatadogIntake:
        self._httpd = _HTTPServer(self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="datadog-intake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> DatadogIntake:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL (what the client's `host` is)."""
        return f"http://{self.host}:{self.port}"

    @property
    def logs_url(self) -> str:
        return self.url + LOGS_PATH

    # scripting and inspection

    def fail_next(self, status: int, count: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next `count` requests that carry a valid key with `status`."""
        with self._lock:
            self._script.extend([(status, dict(headers or {}))] * count)

    def hold_answers(self) -> None:
        """Keep the next requests in flight (received, unanswered) until `release_answers`."""
        self._answering.clear()

    def release_answers(self) -> None:
        self._answering.set()

    def statuses(self) -> list[int]:
        with self._lock:
            return [request.status for request in self.requests]

    def accepted(self) -> list[IntakeRequest]:
        with self._lock:
            return [request for request in self.requests if request.status == 202]

    def logs(self) -> list[dict]:
        """Every stored entry, in arrival order."""
        return [entry for request in self.accepted() for entry in request.entries]

    def bodies(self) -> list[bytes]:
        """Every decoded request body received (accepted or not), for leak searches."""
        with self._lock:
            return [request.body for request in self.requests]

    # serving

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if not self._answering.is_set():
            with self._lock:
                self.waiting += 1
            self._answering.wait()
        encoding = (handler.headers.get("Content-Encoding") or "").strip().lower()
        record = IntakeRequest(status=0, encoding=encoding, raw_bytes=len(raw), body=b"")
        status, payload, headers = self._answer(handler, raw, encoding, record)
        record.status = status
        with self._lock:
            self.requests.append(record)
        self._write(handler, status, payload, headers)

    def _answer(
        self, handler: _Handler, raw: bytes, encoding: str, record: IntakeRequest
    ) -> tuple[int, dict, dict[str, str]]:
        if handler.path.split("?", 1)[0] != LOGS_PATH:
            return 404, _errors(404, "Not Found"), {}
        key = handler.headers.get("DD-API-KEY")
        if not key:
            return 401, _errors(401, "Unauthorized", "API key is missing"), {}
        if key != self.api_key:
            return 403, _errors(403, "Forbidden", "API key is invalid"), {}
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted[0], _errors(scripted[0], "scripted"), scripted[1]
        try:
            if encoding == "gzip":
                body = zlib.decompress(raw, wbits=16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                body = zlib.decompress(raw)
            elif encoding in ("", "identity"):
                body = raw
            else:
                return 400, _errors(400, "Bad Request", f"unsupported Content-Encoding {encoding}"), {}
        except zlib.error:
            return 400, _errors(400, "Bad Request", "the body could not be decompressed"), {}
        record.body = body
        if len(body) > MAX_BODY_BYTES:
            return 413, _errors(413, "Payload Too Large", "the payload is above 5MB uncompressed"), {}
        try:
            entries = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return 400, _errors(400, "Bad Request", "the payload is not JSON"), {}
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            return 400, _errors(400, "Bad Request", "the payload is not a JSON array of logs"), {}
        if len(entries) > MAX_ENTRIES:
            return 413, _errors(413, "Payload Too Large", "more than 1000 logs in one array"), {}
        for index, entry in enumerate(entries):
            if _compact_size(entry) > MAX_ENTRY_BYTES:
                entries[index] = _truncate(entry)
                record.truncated.append(index)
        record.entries = entries
        return 202, {}, {}

    @staticmethod
    def _write(handler: _Handler, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


def _errors(status: int, title: str, detail: str = "") -> dict:
    error = {"status": str(status), "title": title}
    if detail:
        error["detail"] = detail
    return {"errors": [error]}
