"""A local Google Cloud Secret Manager (REST API v1, the access call) for tests.

No machine here reaches secretmanager.googleapis.com, so the gcp secrets backend is tested against
this server through the *real* ``google-cloud-secret-manager`` client with its REST transport
(``client_options={"api_endpoint": "http://127.0.0.1:PORT"}``, anonymous credentials), exactly the
requests the product sends. What is modelled follows Google's REST reference and errors seen in
public issue threads (sources next to each rule); where nothing is known, the stricter behaviour,
marked "unverified".

* ``GET /v1/projects/{p}/secrets/{s}/versions/{n|latest}:access`` (the client adds
  ``?$alt=json;enum-encoding=int``) → 200 ``{"name": "projects/{p}/secrets/{s}/versions/{n}",
  "payload": {"data": "<base64>", "dataCrc32c": "<int64 as a string>"}}``
  (cloud.google.com/secret-manager/docs/reference/rest). ``latest`` is the newest version *whatever
  its state*, so a disabled or destroyed newest version fails even when older ones are enabled.
* Errors use Google's JSON error shape ``{"error": {"code", "message", "status"}}``:
  - 404 ``NOT_FOUND`` for an unknown secret or version (the exact message is unverified);
  - 403 ``PERMISSION_DENIED`` ``Permission 'secretmanager.versions.access' denied for resource
    '<name>' (or it may not exist).`` for secrets the caller may not read (googleapis/python-secret-manager#389);
  - 400 ``FAILED_PRECONDITION`` ``Secret Version [<name>] is in DESTROYED state.`` (or ``DISABLED``)
    (google-github-actions/get-secretmanager-secrets#268, external-secrets#4042).
* Versions are added with ``add_version`` (a rotation: ``latest`` moves on), disabled or destroyed
  with ``set_state``; ``deny`` makes a secret unreadable (403); ``corrupt_crc`` answers a checksum
  that does not match the data; every request is logged (path, Authorization header present or not).

Not modelled: creating secrets over HTTP, IAM, regional endpoints, the 64 KiB payload limit.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_crc32c

ACCESS = re.compile(r"^/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/]+)/versions/(?P<version>[^/:]+):access$")
STATES = ("ENABLED", "DISABLED", "DESTROYED")


@dataclass
class _Version:
    data: bytes
    state: str = "ENABLED"


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    authorized: bool  # an Authorization header was sent


@dataclass
class _State:
    secrets: dict[tuple[str, str], list[_Version]] = field(default_factory=dict)
    denied: set[tuple[str, str]] = field(default_factory=set)
    corrupt_crc: bool = False
    requests: list[RequestRecord] = field(default_factory=list)


def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status}}


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._answer(*self.server.owner._access(self.path.split("?", 1)[0]))

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer(*_error(404, "NOT_FOUND", "Requested entity was not found."))  # unverified wording

    def _answer(self, status: int, body: dict) -> None:
        owner = self.server.owner
        with owner._lock:
            owner._state.requests.append(
                RequestRecord(self.command, self.path.split("?", 1)[0], status, "Authorization" in self.headers)
            )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: GcpSecretsServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class GcpSecretsServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> GcpSecretsServer:
        self._server = _HTTPServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GcpSecretsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # what tests set up

    def add_version(self, project: str, secret: str, data: str | bytes) -> int:
        """A new version of the secret (created if need be); it becomes `latest`. Returns its number."""
        with self._lock:
            versions = self._state.secrets.setdefault((project, secret), [])
            versions.append(_Version(data.encode() if isinstance(data, str) else data))
            return len(versions)

    def set_state(self, project: str, secret: str, version: int, state: str) -> None:
        assert state in STATES, state
        with self._lock:
            entry = self._state.secrets[(project, secret)][version - 1]
            entry.state = state
            if state == "DESTROYED":
                entry.data = b""  # destroyed for good

    def deny(self, project: str, secret: str) -> None:
        with self._lock:
            self._state.denied.add((project, secret))

    @property
    def corrupt_crc(self) -> bool:
        return self._state.corrupt_crc

    @corrupt_crc.setter
    def corrupt_crc(self, value: bool) -> None:
        with self._lock:
            self._state.corrupt_crc = value

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._state.requests)

    # the API

    def _access(self, path: str) -> tuple[int, dict]:
        match = ACCESS.match(path)
        if match is None:
            return _error(404, "NOT_FOUND", "Requested entity was not found.")  # unverified wording
        project, secret, version = match["project"], match["secret"], match["version"]
        name = f"projects/{project}/secrets/{secret}"
        with self._lock:
            if (project, secret) in self._state.denied:
                # Google answers 403, not 404, when the caller may not know whether it exists.
                return _error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'secretmanager.versions.access' denied for "
                    f"resource '{name}/versions/{version}' (or it may not exist).",
                )
            versions = self._state.secrets.get((project, secret))
            if not versions:
                return _error(404, "NOT_FOUND", f"Secret [{name}] not found or has no versions.")  # unverified
            if version == "latest":
                number = len(versions)
            elif version.isdigit() and 1 <= int(version) <= len(versions):
                number = int(version)
            else:
                return _error(404, "NOT_FOUND", f"Secret Version [{name}/versions/{version}] not found.")  # unverified
            entry = versions[number - 1]
            if entry.state != "ENABLED":
                return _error(
                    400, "FAILED_PRECONDITION", f"Secret Version [{name}/versions/{number}] is in {entry.state} state."
                )
            crc = google_crc32c.value(entry.data)
            if self._state.corrupt_crc:
                crc ^= 0x1  # one bit off, as a flipped bit on the way would be
            return 200, {
                "name": f"{name}/versions/{number}",
                "payload": {"data": base64.b64encode(entry.data).decode(), "dataCrc32c": str(crc)},
            }
