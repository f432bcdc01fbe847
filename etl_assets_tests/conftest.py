"""Shared fixtures: a fresh MariaDB database, the local Kaggle and HubSpot servers, and a
clean environment for running `dagster` the way a user does.

A test that needs MariaDB fails loudly when it is missing: CI must not pass by skipping.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl_assets_tests.servers.hubspot_server import HubSpotServer
from etl_assets_tests.servers.kaggle_server import KaggleServer

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "etl_assets" / "data" / "sample_customers.csv"
MARIADB_ADMIN_URL = os.environ.get("ETL_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
# Variables of the product's contract (and the clients') that must not leak in from the shell.
_CONTRACT_PREFIXES = ("ETL_", "KAGGLE_", "HUBSPOT_", "AWS_")


def refuse_in_fast_tier(request: pytest.FixtureRequest, what: str) -> None:
    """A test marked `fast` (make test-fast) promises to need no service: fail it loudly if it asks for one."""
    if request.node.get_closest_marker("fast"):
        pytest.fail(f"{request.node.nodeid} is marked fast but uses {what}; drop the mark or the {what}")


@pytest.fixture
def mariadb_url(request) -> str:
    """A SQLAlchemy URL to a new, empty MariaDB database, dropped afterwards."""
    refuse_in_fast_tier(request, "MariaDB")
    admin = sa.create_engine(MARIADB_ADMIN_URL)
    name = f"etl_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    except sa.exc.OperationalError as exc:
        pytest.fail(f"MariaDB is required at {MARIADB_ADMIN_URL} and did not answer: {exc.orig}")
    url = sa.make_url(MARIADB_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


@pytest.fixture
def hubspot_server(request):
    refuse_in_fast_tier(request, "the local HubSpot server")
    with HubSpotServer() as server:
        yield server


def start_kaggle_server(wait_s: float = 120.0) -> KaggleServer:
    """The server on port 7777, where KAGGLE_API_ENVIRONMENT=TEST points; waits while another test holds it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return KaggleServer().start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def kaggle_server(request):
    refuse_in_fast_tier(request, "the local Kaggle server")
    server = start_kaggle_server()
    try:
        server.add_dataset("datablist", "customers", {"customers-1000.csv": SAMPLE_CSV.read_bytes()})
        yield server
    finally:
        server.stop()


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> dict[str, str]:
    """os.environ without any product setting, with DAGSTER_HOME and the data dir in tmp_path."""
    for name in list(os.environ):
        if name.startswith(_CONTRACT_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "etl_data"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle_config"))
    monkeypatch.setenv("ETL_STEP_RETRY_DELAY_SECONDS", "1")
    return os.environ


@pytest.fixture
def pipeline_env(clean_env, monkeypatch, mariadb_url, hubspot_server, kaggle_server) -> dict[str, str]:
    """Every setting pointed at MariaDB and the local servers."""
    monkeypatch.setenv("ETL_DATABASE_URL", mariadb_url)
    monkeypatch.setenv("KAGGLE_DATASET", "datablist/customers")
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", kaggle_server.username)
    monkeypatch.setenv("KAGGLE_KEY", kaggle_server.key)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", hubspot_server.token)
    monkeypatch.setenv("HUBSPOT_API_BASE", hubspot_server.url)
    return os.environ


@pytest.fixture
def hubspot_env(clean_env, monkeypatch, mariadb_url, hubspot_server) -> HubSpotServer:
    """MariaDB and a valid token for the local HubSpot server, on the embedded sample dataset:
    the whole job without the shared Kaggle port."""
    monkeypatch.setenv("ETL_DATABASE_URL", mariadb_url)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", hubspot_server.token)
    monkeypatch.setenv("HUBSPOT_API_BASE", hubspot_server.url)
    return hubspot_server


@dataclass
class Webhook:
    url: str
    answers: list[int] = field(default_factory=list)  # statuses answered first, in turn; then 200
    received: list[dict] = field(default_factory=list)  # every JSON body posted, answered or refused


@pytest.fixture
def webhook():
    """A local alert webhook (Slack-style: JSON POSTs)."""
    hook = Webhook("")

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(hook.answers.pop(0) if hook.answers else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook.url = f"http://127.0.0.1:{server.server_port}/hook"
    yield hook
    server.shutdown()


# In-step and step retries cut to seconds, for tests that ride out an outage through both.
SHORT_RETRIES = {
    "ETL_RETRY_ATTEMPTS": "2",
    "ETL_RETRY_MAX_SECONDS": "2",
    "ETL_STEP_RETRIES": "3",
    "ETL_STEP_RETRY_DELAY_SECONDS": "1",
}


def run_dagster(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`dagster ...` from the venv of this interpreter, as a user would type it."""
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [str(dagster), *args], cwd=REPO, env=dict(env or os.environ), capture_output=True, text=True, timeout=timeout
    )
