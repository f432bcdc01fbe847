"""A local stand-in for the Kaggle API, for tests.

It models Kaggle's documented behaviour (statuses, bodies, the signed-URL downloads, the limits
noted below) and the wire format that the real clients (``kaggle`` 2.2.5 on top of ``kagglesdk``
0.1.38) speak:

* RPC-style ``POST /api/v1/{Service}/{Method}`` calls with camelCase JSON bodies. That is the URL
  kagglesdk builds for every non-PROD environment; ``KAGGLE_API_ENVIRONMENT=TEST`` points it at
  ``http://localhost:7777``, which is why that is the default port.
* Basic (``username:key``) or Bearer (API token) auth on every call. Errors are JSON
  ``{"code": N, "message": "..."}``: kagglesdk's ``_prepare_response`` turns exactly that shape into
  ``requests.HTTPError(message, response=...)``.
* ``DownloadDataset`` answers 302 to a signed URL on this same server; a GET on it streams the archive
  with ``Content-Length``, ``Last-Modified``, ``ETag`` and ``Accept-Ranges`` and honours
  ``Range``/``If-Range`` the way Cloud Storage does, which is what ``KaggleApi.download_file`` relies
  on to resume a truncated download. A signed URL expires ``X-Goog-Expires`` seconds after its
  ``X-Goog-Date`` (Kaggle's browser links: 3 days; its API links: unverified, ``signed_url_ttl``
  here); then Cloud Storage answers **400** (not 403) with an ``ExpiredToken`` XML body, and only a
  new ``DownloadDataset`` call gives a working URL.
* Access: a dataset whose rules the account has not accepted, or another account's private dataset,
  is refused with 403 (see ``set_access``).

Fault hooks (``fail_next``, ``outage``, ``truncate_next_download``, ``expire_next_download``,
``drop_next``) and a request log let tests drive the client's error paths. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import errno
import hashlib
import hmac
import io
import json
import secrets
import socket
import socketserver
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

__all__ = ["KaggleServer", "RequestRecord"]

API_PREFIX = "/api/v1/"
SIGNED_PREFIX = "/signed/"

# Calls that answer without credentials. IntrospectToken must: KaggleApi introspects a token while
# presenting that same token as its Bearer credential, so an invalid token has to get
# ``{"active": false}`` (and a fall-back to the API key) rather than a 401.
_ANONYMOUS_METHODS = {"security.OAuthService/IntrospectToken"}

# Headers worth keeping in the request log; the rest is noise for assertions.
_LOGGED_HEADERS = ("Authorization", "Range", "If-Range", "User-Agent")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    method: str
    path: str  # raw path including the query string
    status: int | None  # None when the connection was dropped without an answer
    headers: dict[str, str]  # only _LOGGED_HEADERS that were present
    body: Any = None  # parsed JSON body of an API call
    fault: str | None = None  # "dropped", "injected", "truncated" or "expired"


@dataclass
class _Version:
    number: int
    files: dict[str, bytes]
    archive: bytes
    created: datetime  # naive UTC, whole seconds (HTTP dates carry no more)


@dataclass
class _Dataset:
    id: int
    owner: str
    slug: str
    title: str
    versions: dict[int, _Version] = field(default_factory=dict)
    rules_accepted: bool = True
    private: bool = False  # another account's, not shared with this one

    @property
    def current(self) -> _Version:
        return self.versions[max(self.versions)]


@dataclass
class _Failure:
    status: int
    path_contains: str | None
    headers: dict[str, str]
    remaining: int | None = None  # fail_next: matching requests still to fail
    until: float | None = None  # outage: time.monotonic() when it ends


class KaggleServer:
    """Local Kaggle API server; use as a context manager or call ``start()``/``stop()``."""

    def __init__(
        self,
        port: int = 7777,
        *,
        username: str = "tester",
        key: str = "test-key",
        token: str = "test-api-token",
        signed_url_ttl: int = 3600,
    ) -> None:
        self.username = username
        self.key = key
        self.token = token
        self.signed_url_ttl = signed_url_ttl
        self._requested_port = port
        self.port: int | None = None
        self._lock = threading.Lock()
        self._datasets: dict[tuple[str, str], _Dataset] = {}
        self._next_id = 1
        self._last_created: datetime | None = None
        self._signed: dict[str, tuple[str, str, int, str | None]] = {}
        self._signing_key = secrets.token_bytes(32)
        self._failures: list[_Failure] = []
        self._drops = 0
        self._truncations: list[tuple[int, bool]] = []  # (bytes sent, whether the URL expires then)
        self._expired: dict[str, datetime] = {}  # signed object id -> when its URL was cut short
        self._log: list[RequestRecord] = []
        self._downloads = 0
        self._httpds: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("KaggleServer is not started")
        return f"http://localhost:{self.port}"

    def start(self) -> KaggleServer:
        if self._httpds:
            return self
        self._httpds = self._bind()
        self.port = self._httpds[0].server_address[1]
        for httpd in self._httpds:
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() waits one poll interval
                name=f"KaggleServer-{httpd.server_address[0]}:{self.port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for httpd in self._httpds:
            httpd.shutdown()
            httpd.server_close()
        # Keep-alive connections outlive the listener; cut them so a client session left over from
        # one test cannot talk to a stopped server's state in the next.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        self._httpds, self._threads = [], []

    def __enter__(self) -> KaggleServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> list[ThreadingHTTPServer]:
        """Listen on 127.0.0.1 and, when the host has IPv6 loopback, on ::1 with the same port.

        "localhost" resolves to either depending on the host (and requests tries them in order), so
        serving both makes ``http://localhost:PORT`` work everywhere without listening beyond loopback.
        """
        for _ in range(20):
            v4 = _HTTPServer(("127.0.0.1", self._requested_port), _Handler)
            v4.kaggle = self
            port = v4.server_address[1]
            try:
                v6 = _HTTPServer6(("::1", port, 0, 0), _Handler)
            except OSError as exc:
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or not socket.has_ipv6:
                    return [v4]  # no IPv6 loopback here, so "localhost" can only mean 127.0.0.1
                v4.server_close()
                if exc.errno == errno.EADDRINUSE and self._requested_port == 0:
                    continue  # the ephemeral port is taken on ::1; pick another
                raise
            v6.kaggle = self
            return [v4, v6]
        raise OSError(errno.EADDRINUSE, "no free port on both 127.0.0.1 and ::1")

    # ------------------------------------------------------------------ state

    def add_dataset(
        self,
        owner: str,
        slug: str,
        files: dict[str, bytes] | None = None,
        version: int = 1,
        zip_bytes: bytes | None = None,
        *,
        title: str | None = None,
    ) -> int:
        """Create or replace version ``version`` of ``owner/slug``; returns the version number.

        The download archive is a zip of ``files`` unless ``zip_bytes`` is given, which is served
        verbatim (e.g. a corrupt archive).
        """
        with self._lock:
            dataset = self._datasets.get((owner, slug))
            if dataset is None:
                dataset = _Dataset(self._next_id, owner, slug, title or slug.replace("-", " ").title())
                self._next_id += 1
                self._datasets[(owner, slug)] = dataset
            elif title is not None:
                dataset.title = title
            dataset.versions[version] = self._make_version(version, files, zip_bytes)
        return version

    def bump_version(
        self,
        owner: str,
        slug: str,
        files: dict[str, bytes] | None = None,
        zip_bytes: bytes | None = None,
    ) -> int:
        """Publish a new version of an existing dataset; returns its number."""
        with self._lock:
            dataset = self._datasets[(owner, slug)]
            number = max(dataset.versions) + 1
            dataset.versions[number] = self._make_version(number, files, zip_bytes)
        return number

    def _make_version(self, number: int, files: dict[str, bytes] | None, zip_bytes: bytes | None) -> _Version:
        files = dict(files or {})
        created = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        # KaggleApi.download_needed skips a download unless Last-Modified is strictly newer than the
        # local file, at one-second resolution: versions published within a second must still differ.
        if self._last_created is not None and created <= self._last_created:
            created = self._last_created + timedelta(seconds=1)
        self._last_created = created
        archive = zip_bytes if zip_bytes is not None else _zip(files, created)
        return _Version(number, files, archive, created)

    # ------------------------------------------------------------------ fault hooks

    def fail_next(
        self,
        status: int,
        count: int = 1,
        path_contains: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (e.g. 503, or 429 with Retry-After)."""
        with self._lock:
            self._failures.append(_Failure(status, path_contains, dict(headers or {}), remaining=count))

    def outage(
        self,
        seconds: float,
        status: int = 503,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer every matching request with ``status`` for ``seconds`` from now: an outage lasts
        minutes, whatever the client does meanwhile (503, or 429 with or without ``Retry-After``).

        Kaggle's 503/429 bodies are unverified; the API answers its usual ``{"code","message"}``
        JSON here, the signed URLs Cloud Storage's XML.
        """
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self._failures.append(_Failure(status, path_contains, headers, until=time.monotonic() + seconds))

    def truncate_next_download(self, at_bytes: int) -> None:
        """The next signed-URL body announces its full Content-Length but the connection closes
        after ``at_bytes`` bytes of that body (counted from the start of a 206 body too)."""
        with self._lock:
            self._truncations.append((at_bytes, False))

    def expire_next_download(self, at_bytes: int) -> None:
        """Like ``truncate_next_download``, and that signed URL expires as the connection closes: a
        download slower than the URL's lifetime. Resuming on it gets 400 ``ExpiredToken``."""
        with self._lock:
            self._truncations.append((at_bytes, True))

    def set_access(self, owner: str, slug: str, *, rules_accepted: bool = True, private: bool = False) -> None:
        """Whether this account accepted the dataset's rules, and whether it is another account's private one."""
        with self._lock:
            dataset = self._datasets[(owner, slug)]
            dataset.rules_accepted, dataset.private = rules_accepted, private

    def drop_next(self, count: int = 1) -> None:
        """Close the connection of the next ``count`` requests without any response."""
        with self._lock:
            self._drops += count

    # ------------------------------------------------------------------ observability

    @property
    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def count_requests(self, path_contains: str = "", method: str | None = None) -> int:
        return sum(
            1
            for record in self.request_log
            if path_contains in record.path and (method is None or record.method == method)
        )

    @property
    def downloads(self) -> int:
        """Number of GETs on signed download URLs (resumes and failed attempts included)."""
        with self._lock:
            return self._downloads

    # ------------------------------------------------------------------ request handling
    # Called from handler threads. Each returns (status, headers, body).

    def _take_fault(self, path: str) -> tuple[str, Any] | None:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return ("drop", None)
            now = time.monotonic()
            self._failures = [f for f in self._failures if f.until is None or f.until > now]
            for failure in self._failures:
                if failure.path_contains is None or failure.path_contains in path:
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._failures.remove(failure)
                    return ("fail", failure)
        return None

    def _take_truncation(self, path: str) -> tuple[int, bool] | None:
        """Where to cut the body of this signed-URL GET, and whether its URL expires then."""
        with self._lock:
            if not self._truncations:
                return None
            at_bytes, expire = self._truncations.pop(0)
            if expire:
                self._expired[_object_id(path)] = datetime.now(UTC).replace(microsecond=0)
            return at_bytes, expire

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            if record.method == "GET" and record.path.startswith(SIGNED_PREFIX):
                self._downloads += 1

    def _authenticate(self, authorization: str | None) -> str | None:
        """The user behind an Authorization header, or None."""
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return self.username if hmac.compare_digest(credentials.strip(), self.token) else None
        if scheme.lower() == "basic":
            try:
                user, _, key = base64.b64decode(credentials.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if user == self.username and hmac.compare_digest(key, self.key):
                return user
        return None

    def _handle_api(self, rpc: str, body: dict, authorization: str | None, host: str) -> tuple:
        if rpc not in _ANONYMOUS_METHODS and self._authenticate(authorization) is None:
            return _json_error(HTTPStatus.UNAUTHORIZED, "Unauthenticated")
        handler = {
            "datasets.DatasetApiService/GetDataset": self._get_dataset,
            "datasets.DatasetApiService/ListDatasetFiles": self._list_dataset_files,
            "datasets.DatasetApiService/GetDatasetStatus": self._get_dataset_status,
            "datasets.DatasetApiService/DownloadDataset": lambda b: self._download_dataset(b, host),
            "security.OAuthService/IntrospectToken": self._introspect_token,
        }.get(rpc)
        if handler is None:
            return _json_error(HTTPStatus.NOT_FOUND, "Not found")
        return handler(body)

    def _find(self, body: dict) -> _Dataset | None:
        with self._lock:
            return self._datasets.get((body.get("ownerSlug", ""), body.get("datasetSlug", "")))

    def _refusal(self, dataset: _Dataset | None, downloading: bool = False) -> tuple | None:
        """403 for another account's private dataset (every call), or a download whose rules are not accepted."""
        if dataset is not None and dataset.private:
            # Body unverified: modelled on "Permission 'competitions.participate' was denied"
            # (Kaggle/kaggle-cli#555); Kaggle staff say a private resource may also answer 403
            # where "not found" was meant (#548), so 403, not 404, on every call.
            return _json_error(HTTPStatus.FORBIDDEN, "Permission 'datasets.get' was denied")
        if dataset is not None and downloading and not dataset.rules_accepted:
            # The message seen for competitions (Kaggle/kaggle-cli#152); for a dataset with rules it
            # is unverified. The page and metadata are public, so only the download is refused: the
            # client learns it as late as it can. Rules cannot be accepted through the API (#104).
            return _json_error(
                HTTPStatus.FORBIDDEN,
                "You must accept this competition's rules before you'll be able to download files.",
            )
        return None

    def _version(self, dataset: _Dataset, body: dict) -> _Version | None:
        number = body.get("datasetVersionNumber")
        with self._lock:
            return dataset.current if number is None else dataset.versions.get(int(number))

    def _get_dataset(self, body: dict) -> tuple:
        dataset = self._find(body)
        if dataset is None:
            return _json_error(HTTPStatus.NOT_FOUND, "Not found")
        if refusal := self._refusal(dataset):
            return refusal
        with self._lock:
            current = dataset.current
            versions = [dataset.versions[n] for n in sorted(dataset.versions, reverse=True)]
        ref = f"{dataset.owner}/{dataset.slug}"
        return _json_ok(
            {
                "id": dataset.id,
                "ref": ref,
                "title": dataset.title,
                "subtitle": "",
                "creatorName": dataset.owner,
                "creatorUrl": dataset.owner,
                "ownerName": dataset.owner,
                "ownerRef": dataset.owner,
                "url": f"https://www.kaggle.com/datasets/{ref}",
                "licenseName": "CC0-1.0",
                "isPrivate": False,
                "lastUpdated": _iso(current.created),
                "currentVersionNumber": current.number,
                "totalBytes": _total_bytes(current),
                "files": [_file_json(dataset, current, name) for name in current.files],
                "versions": [
                    {"versionNumber": v.number, "creationDate": _iso(v.created), "creatorName": dataset.owner}
                    for v in versions
                ],
                "tags": [],
            }
        )

    def _list_dataset_files(self, body: dict) -> tuple:
        dataset = self._find(body)
        if refusal := self._refusal(dataset):
            return refusal
        version = dataset and self._version(dataset, body)
        if not version:
            return _json_error(HTTPStatus.NOT_FOUND, "Not found")
        names = list(version.files)
        start = int(body.get("pageToken") or 0)
        size = int(body.get("pageSize") or 20)
        page = names[start : start + size]
        more = start + size < len(names)
        return _json_ok(
            {
                "datasetFiles": [_file_json(dataset, version, name) for name in page],
                "nextPageToken": str(start + size) if more else "",
            }
        )

    def _get_dataset_status(self, body: dict) -> tuple:
        dataset = self._find(body)
        if dataset is None:
            return _json_error(HTTPStatus.NOT_FOUND, "Not found")
        if refusal := self._refusal(dataset):
            return refusal
        return _json_ok({"status": "READY"})

    def _introspect_token(self, body: dict) -> tuple:
        if hmac.compare_digest(str(body.get("token", "")), self.token):
            exp = int(time.time()) + 3600
            return _json_ok({"active": True, "username": self.username, "userId": 1, "exp": exp})
        return _json_ok({"active": False})

    def _download_dataset(self, body: dict, host: str) -> tuple:
        dataset = self._find(body)
        if refusal := self._refusal(dataset, downloading=True):
            return refusal
        version = dataset and self._version(dataset, body)
        if not version:
            return _json_error(HTTPStatus.NOT_FOUND, "Not found")
        file_name = body.get("fileName") or None
        if file_name is not None and file_name not in version.files:
            return _json_error(HTTPStatus.NOT_FOUND, "Not found")
        # A single file is served as itself (small files are not zipped); the whole dataset as <slug>.zip.
        object_name = file_name.rsplit("/", 1)[-1] if file_name else f"{dataset.slug}.zip"
        object_id = secrets.token_hex(16)
        with self._lock:
            self._signed[object_id] = (dataset.owner, dataset.slug, version.number, file_name)
        location = f"http://{host}{self._sign(object_id, object_name)}"
        return HTTPStatus.FOUND, {"Location": location, "Content-Type": "text/html"}, b""

    def _sign(self, object_id: str, object_name: str) -> str:
        """A Cloud-Storage-looking V4 signed URL path; only the signature and expiry are checked."""
        path = f"{SIGNED_PREFIX}{object_id}/{quote(object_name)}"
        issued = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        expires = str(self.signed_url_ttl)
        signature = self._signature(path, issued, expires)
        return (
            f"{path}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=kaggle-test"
            f"&X-Goog-Date={issued}&X-Goog-Expires={expires}&X-Goog-SignedHeaders=host"
            f"&X-Goog-Signature={signature}"
        )

    def _signature(self, path: str, issued: str, expires: str) -> str:
        return hmac.new(self._signing_key, f"{path}\n{issued}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _handle_signed(self, raw_path: str, range_header: str | None, if_range: str | None) -> tuple:
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        issued, expires = query.get("X-Goog-Date", ""), query.get("X-Goog-Expires", "0")
        expected = self._signature(parts.path, issued, expires)
        if not hmac.compare_digest(query.get("X-Goog-Signature", ""), expected):
            return _gcs_error(HTTPStatus.FORBIDDEN, "SignatureDoesNotMatch", "The request signature does not match.")
        object_id = _object_id(parts.path)
        expires_at = datetime.strptime(issued, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires_at += timedelta(seconds=int(expires))
        with self._lock:
            expires_at = min(expires_at, self._expired.get(object_id, expires_at))
        if datetime.now(UTC) >= expires_at:
            # Cloud Storage: 400, not 403 (api-facts-2 "Kaggle downloads"); the body's exact text.
            return _gcs_error(
                HTTPStatus.BAD_REQUEST,
                "ExpiredToken",
                "The provided token has expired.",
                f"Request signature expired at: {expires_at.isoformat()}",
            )
        # Resolve the object now, not at signing time, so replacing a version changes what the URL
        # serves (and its ETag), which is what makes If-Range meaningful.
        with self._lock:
            target = self._signed.get(object_id)
            dataset = target and self._datasets.get(target[:2])
            version = dataset and dataset.versions.get(target[2])
        if not version:
            return _gcs_error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
        file_name = target[3]
        if file_name is not None and file_name not in version.files:
            return _gcs_error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
        content = version.files[file_name] if file_name else version.archive
        content_type = "application/octet-stream" if file_name else "application/zip"
        etag = f'"{hashlib.md5(content).hexdigest()}"'
        last_modified = email.utils.format_datetime(version.created.replace(tzinfo=UTC), usegmt=True)
        headers = {
            "Content-Type": content_type,
            "Last-Modified": last_modified,
            "ETag": etag,
            "Accept-Ranges": "bytes",
        }
        # If-Range: a stale validator means the client's partial belongs to another object, so the
        # whole current object is sent (200) instead of a 206 it would append to the wrong bytes.
        if range_header and (if_range is None or if_range in (etag, last_modified)):
            span = _parse_range(range_header, len(content))
            if span == "unsatisfiable":
                headers.update({"Content-Range": f"bytes */{len(content)}", "Content-Type": "application/xml"})
                return HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers, b""
            if span is not None:
                first, last = span
                headers["Content-Range"] = f"bytes {first}-{last}/{len(content)}"
                return HTTPStatus.PARTIAL_CONTENT, headers, content[first : last + 1]
        return HTTPStatus.OK, headers, content


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    kaggle: KaggleServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # IPv4 is served by the 127.0.0.1 twin; a v6-only socket avoids clashing with it.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service
    timeout = 30  # idle keep-alive connections do not pin a thread forever
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.kaggle._lock:
            self.server.kaggle._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.kaggle._lock:
            self.server.kaggle._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client may already be gone after a drop or truncation

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log replaces stderr noise

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        kaggle = self.server.kaggle
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # always drain the body
        headers = {name: self.headers[name] for name in _LOGGED_HEADERS if name in self.headers}
        is_api = self.path.startswith(API_PREFIX)
        is_signed = self.path.startswith(SIGNED_PREFIX)
        body: Any = None
        if is_api and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")

        def record(status: int | None, fault: str | None = None) -> None:
            kaggle._record(RequestRecord(self.command, self.path, status, headers, body, fault))

        fault = kaggle._take_fault(self.path)
        if fault and fault[0] == "drop":
            self.close_connection = True
            record(None, "dropped")
            return
        if fault:
            failure: _Failure = fault[1]
            make_error = _gcs_error if is_signed else _json_error
            status, out_headers, payload = make_error(failure.status, _reason(failure.status))
            out_headers.update(failure.headers)
            record(status, "injected")  # before the reply, so a client that got it finds it counted
            self._respond(status, out_headers, payload)
            return

        if is_api and self.command == "POST":
            rpc = self.path[len(API_PREFIX) :].split("?", 1)[0]
            if not isinstance(body, (dict, type(None))):
                status, out_headers, payload = _json_error(HTTPStatus.BAD_REQUEST, "Invalid JSON payload")
            else:
                host = self.headers.get("Host") or f"localhost:{kaggle.port}"
                status, out_headers, payload = kaggle._handle_api(
                    rpc, body or {}, self.headers.get("Authorization"), host
                )
        elif is_signed and self.command == "GET":
            status, out_headers, payload = kaggle._handle_signed(
                self.path, self.headers.get("Range"), self.headers.get("If-Range")
            )
        else:
            status, out_headers, payload = _json_error(HTTPStatus.NOT_FOUND, "Not found")

        cut = kaggle._take_truncation(self.path) if is_signed and status in (200, 206) else None
        truncate_at = cut[0] if cut else None
        record(status, ("expired" if cut[1] else "truncated") if cut else None)
        self._respond(status, out_headers, payload, truncate_at)

    def _respond(self, status: int, headers: dict[str, str], payload: bytes, truncate_at: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if truncate_at is None:
            self.wfile.write(payload)
            return
        # Promise the full length, deliver less, hang up: the client sees an incomplete read.
        self.wfile.write(payload[:truncate_at])
        self.wfile.flush()
        self.close_connection = True


# ---------------------------------------------------------------------- helpers


def _json_ok(payload: dict) -> tuple:
    return HTTPStatus.OK, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(payload).encode()


def _json_error(status: int, message: str) -> tuple:
    """Kaggle's error shape; kagglesdk raises HTTPError(message) for any JSON body with code >= 400."""
    payload = json.dumps({"code": int(status), "message": message}).encode()
    return int(status), {"Content-Type": "application/json; charset=utf-8"}, payload


def _gcs_error(status: int, code: str, message: str | None = None, details: str | None = None) -> tuple:
    """Cloud Storage (where signed URLs point) answers errors in XML, as quoted in api-facts-2."""
    details_xml = f"<Details>{details}</Details>" if details else ""
    payload = f"<Error><Code>{code}</Code><Message>{message or code}</Message>{details_xml}</Error>".encode()
    return int(status), {"Content-Type": "application/xml"}, payload


def _object_id(path: str) -> str:
    return path[len(SIGNED_PREFIX) :].split("/", 1)[0]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _iso(moment: datetime) -> str:
    """The timestamp format kagglesdk's DateTimeSerializer writes and reads."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def _total_bytes(version: _Version) -> int:
    return sum(len(data) for data in version.files.values()) if version.files else len(version.archive)


def _file_json(dataset: _Dataset, version: _Version, name: str) -> dict:
    return {
        "ref": name,
        "datasetRef": f"{dataset.owner}/{dataset.slug}",
        "ownerRef": dataset.owner,
        "name": name,
        "creationDate": _iso(version.created),
        "totalBytes": len(version.files[name]),
    }


def _zip(files: dict[str, bytes], created: datetime) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=created.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(first, last) for a single ``bytes=`` range, "unsatisfiable", or None to ignore the header."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multipart ranges: serve the whole object, as RFC 9110 allows
    first_s, _, last_s = spec.strip().partition("-")
    try:
        if not first_s:  # suffix range: the last N bytes
            length = int(last_s)
            return (max(size - length, 0), size - 1) if length > 0 and size else "unsatisfiable"
        first = int(first_s)
        last = min(int(last_s), size - 1) if last_s else size - 1
    except ValueError:
        return None
    if first >= size or first > last:
        return "unsatisfiable"
    return first, last
