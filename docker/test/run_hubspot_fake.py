"""Serve the test suite's HubSpot fake inside the compose test stack.

``etl_assets_tests.servers.hubspot_server.HubSpotServer`` binds 127.0.0.1 on a
random port (right for in-process tests); here it has to answer other
containers, so its HTTP server class is re-bound to 0.0.0.0:$HUBSPOT_FAKE_PORT
(default 8080).  Everything else is the unmodified fake.

A second, test-only port ($HUBSPOT_FAKE_ADMIN_PORT, default 8081) reports what
the fake received, for the stack test to assert on:
    GET /health   -> {"ok": true}
    GET /state    -> {"contacts": N, "emails": [...], "requests": N, "upsert_requests": N,
                      "statuses": {"200": N, ...}, "created": N, "latency": S}
    GET /writes   -> {"<email>": {"created": n, "updated": n}, ...}: every write applied, per contact
    POST /latency {"seconds": S} -> the fake answers every API request S seconds late
                     (scripts/stack_faults.py slows a sync down to cancel it halfway)
The bearer token the fake accepts comes from $HUBSPOT_FAKE_TOKEN_FILE (the same
compose secret the pipeline reads) or $HUBSPOT_FAKE_TOKEN.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from etl_assets_tests.servers import hubspot_server

HOST = os.environ.get("HUBSPOT_FAKE_HOST", "0.0.0.0")
API_PORT = int(os.environ.get("HUBSPOT_FAKE_PORT", "8080"))
ADMIN_PORT = int(os.environ.get("HUBSPOT_FAKE_ADMIN_PORT", "8081"))

if not hasattr(hubspot_server, "_HTTPServer"):
    sys.exit("hubspot_server._HTTPServer is gone: update docker/test/run_hubspot_fake.py")


class _PublicHTTPServer(hubspot_server._HTTPServer):
    """The fake's own server class, bound to HOST:API_PORT instead of 127.0.0.1:0."""

    def server_bind(self) -> None:
        self.server_address = (HOST, API_PORT)
        super().server_bind()


hubspot_server._HTTPServer = _PublicHTTPServer


def _token() -> str:
    path = os.environ.get("HUBSPOT_FAKE_TOKEN_FILE", "")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
        if value:
            return value
    return os.environ.get("HUBSPOT_FAKE_TOKEN", "test-token")


def main() -> int:
    fake = hubspot_server.HubSpotServer(token=_token()).start()

    class Admin(BaseHTTPRequestHandler):
        def _reply(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
                seconds = float(payload["seconds"])
            except (ValueError, KeyError, TypeError):
                self.send_error(400, 'expected {"seconds": <number>}')
                return
            if self.path != "/latency" or not 0 <= seconds <= 60:
                self.send_error(404 if self.path != "/latency" else 400)
                return
            fake.latency = seconds
            self._reply({"latency": fake.latency})

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path == "/writes":
                self._reply(fake.write_counts())
                return
            if self.path == "/health":
                body = {"ok": True, "port": fake.port}
            elif self.path == "/state":
                contacts = fake.contacts_snapshot()
                records = fake._records()
                body = {
                    "contacts": len(contacts),
                    "emails": sorted(contacts)[:50],
                    "requests": len(records),
                    "upsert_requests": fake.count_requests("/batch/upsert"),
                    "statuses": dict(Counter(str(r.status) for r in records)),
                    "created": fake.created_count(),
                    "latency": fake.latency,
                }
            else:
                self.send_error(404)
                return
            self._reply(body)

        def log_message(self, format, *args) -> None:  # noqa: A002
            pass

    admin = ThreadingHTTPServer((HOST, ADMIN_PORT), Admin)
    admin.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=admin.serve_forever, daemon=True).start()
    print(f"HubSpot fake on {HOST}:{fake.port}, admin on {HOST}:{ADMIN_PORT}", flush=True)
    stop.wait()
    admin.shutdown()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
