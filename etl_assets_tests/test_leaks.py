"""No secret value reaches anything a person or a log shipper can see.

Two real `daily_etl` runs with distinctive secrets held in a secrets backend (each in turn: a
local AWS Secrets Manager (moto), a real OpenBao server with AppRole login, a local Google Secret
Manager): one that succeeds (HubSpot token, Kaggle key and database password all in use), then,
after rotating the database password to a wrong one, one that fails on it. Then every output is
searched for the values: the captured stdout/stderr, every file of the Dagster instance (the
SQLite event log and run storage, zlib-compressed snapshots included, compute logs), the JSON
log file, the lines shipped to CloudWatch Logs and to Datadog (the local intake's received bodies;
the Datadog API key is one of the secrets), the data directory, and what the GraphQL API
(the UI) shows of runs, events, errors, run config and resource config, also for a code
location that sets the secrets as literal resource config (see the xfail below).
"""

import json
import os
import shutil
import sqlite3
import uuid
import zlib
from pathlib import Path

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import WorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from etl_assets_tests.conftest import MARIADB_ADMIN_URL, REPO, run_dagster
from etl_assets_tests.resources.openbao import approle_credentials, openbao  # noqa: F401 (fixture)
from etl_assets_tests.resources.test_secrets import aws_env, moto_server  # noqa: F401 (fixtures)
from etl_assets_tests.resources.test_secrets_gcp import gcp_secrets_server  # noqa: F401 (fixture)
from etl_assets_tests.test_logs_datadog import datadog_intake  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

HUBSPOT_TOKEN = "hs-SECRET-TOKEN-8f3a"
KAGGLE_KEY = "kg-SECRET-KEY-4b1d"
DB_PASSWORD = "db-SECRET-PASS-51c7"
WRONG_DB_PASSWORD = "db-SECRET-WRONG-9e2c"
DATADOG_KEY = "dd-SECRET-APIKEY-6e0b"
SECRETS = (HUBSPOT_TOKEN, KAGGLE_KEY, DB_PASSWORD, WRONG_DB_PASSWORD, DATADOG_KEY)
LOG_GROUP = "/etl_assets/leak-test"


@pytest.fixture
def db_user(mariadb_url):
    """A MariaDB account for the test database whose password is one of the secrets."""
    name = f"etl_leak_{uuid.uuid4().hex[:8]}"
    database = sa.make_url(mariadb_url).database
    admin = sa.create_engine(MARIADB_ADMIN_URL)
    with admin.begin() as conn:
        for host in ("%", "localhost"):
            conn.exec_driver_sql("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, DB_PASSWORD))
            conn.exec_driver_sql(f"GRANT ALL ON {database}.* TO %s@%s", (name, host))
    # The URL carries no password: it comes from the secret ETL_DATABASE_PASSWORD.
    yield sa.make_url(mariadb_url).set(username=name, password=None).render_as_string(hide_password=False)
    with admin.begin() as conn:
        for host in ("%", "localhost"):
            conn.exec_driver_sql("DROP USER IF EXISTS %s@%s", (name, host))
    admin.dispose()


def _backend_holding_the_secrets(backend: str, request, monkeypatch, tmp_path):
    """Configures `backend` for the runs; returns `store(values)`, which writes a new version of the
    secret holding every key, and the backend's own credentials (canaries too)."""
    if backend == "aws":
        secret_id = f"etl_assets/leak-{uuid.uuid4().hex[:8]}"
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        client.create_secret(Name=secret_id, SecretString="{}")
        monkeypatch.setenv("ETL_AWS_SECRET_ID", secret_id)
        return lambda values: client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(values)), ()
    if backend == "vault":
        server = request.getfixturevalue("openbao")
        for name in [name for name in os.environ if name.startswith(("VAULT_", "BAO_"))]:
            monkeypatch.delenv(name)
        path = server.unique_path()
        role_id, secret_id_file = approle_credentials(server, tmp_path)
        for name, value in {
            "VAULT_ADDR": server.address,
            "ETL_VAULT_PATH": path,
            "VAULT_ROLE_ID": role_id,
            "VAULT_SECRET_ID_FILE": str(secret_id_file),
        }.items():
            monkeypatch.setenv(name, value)
        return lambda values: server.put(path, values), (secret_id_file.read_text().strip(),)
    server, project, secret = request.getfixturevalue("gcp_secrets_server"), "etl-leak", "etl-assets-leak"
    for name, value in {
        "ETL_GCP_PROJECT": project,
        "ETL_GCP_SECRET_ID": secret,
        "ETL_GCP_SECRETS_ENDPOINT": server.url,
    }.items():
        monkeypatch.setenv(name, value)
    return lambda values: server.add_version(project, secret, json.dumps(values)), ()


@pytest.fixture(params=["aws", "vault", "gcp"])
def leak_env(
    request, pipeline_env, aws_env, db_user, hubspot_server, kaggle_server, datadog_intake, monkeypatch, tmp_path
):
    hubspot_server.token = HUBSPOT_TOKEN
    kaggle_server.key = KAGGLE_KEY
    store, canaries = _backend_holding_the_secrets(request.param, request, monkeypatch, tmp_path)
    store(
        {
            "HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN,
            "KAGGLE_KEY": KAGGLE_KEY,
            "ETL_DATABASE_PASSWORD": DB_PASSWORD,
            "ETL_DATADOG_API_KEY": DATADOG_KEY,
        }
    )
    for name in ("HUBSPOT_ACCESS_TOKEN", "KAGGLE_KEY"):  # pipeline_env's values; ours live in the backend only
        monkeypatch.delenv(name)
    monkeypatch.setenv("ETL_SECRETS_BACKEND", request.param)
    monkeypatch.setenv("ETL_DATABASE_URL", db_user)
    monkeypatch.setenv("ETL_LOG_FILE", str(tmp_path / "logs" / "etl.jsonl"))
    monkeypatch.setenv("ETL_CLOUDWATCH_LOG_GROUP", LOG_GROUP)
    datadog_intake.api_key = DATADOG_KEY  # the intake accepts only the key the backend holds
    monkeypatch.setenv("ETL_DATADOG_LOGS_URL", datadog_intake.logs_url)
    monkeypatch.setenv("ETL_STEP_RETRIES", "0")
    shutil.copy(REPO / "dagster.yaml", Path(pipeline_env["DAGSTER_HOME"]) / "dagster.yaml")
    return {"env": dict(pipeline_env), "store": store, "canaries": SECRETS + canaries}


def _sqlite_texts(path: Path) -> list[bytes]:
    """Every value of every table, compressed blobs (Dagster's snapshots) decompressed."""
    found = []
    with sqlite3.connect(path) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        found.append(value.encode())
                    elif isinstance(value, bytes):
                        found.append(value)
                        try:
                            found.append(zlib.decompress(value))
                        except zlib.error:
                            pass
    return found


def _files(root: Path) -> list[bytes]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found.append(path.read_bytes())
        if path.suffix == ".db":
            found.extend(_sqlite_texts(path))
    return found


class _InProcessModules(WorkspaceLoadTarget):
    """The code locations loaded in this process, as the webserver would load them."""

    def __init__(self, locations: dict[str, LoadableTargetOrigin]):
        self.locations = locations

    def create_origins(self):
        return [InProcessCodeLocationOrigin(origin, location_name=name) for name, origin in self.locations.items()]


RUNS_QUERY = """
query Runs($runIds: [String]) {
  runsOrError(filter: {runIds: $runIds}) {
    ... on Runs { results { runId status runConfigYaml tags { key value } } }
  }
}"""

EVENTS_QUERY = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey eventType }
        ... on ErrorEvent { error { className message stack cause { message stack } } }
      }
    }
  }
}"""

LOCATION_QUERY = """
query Location($repo: RepositorySelector!, $job: PipelineSelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $repo) {
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
  }
  runConfigSchemaOrError(selector: $job) {
    ... on RunConfigSchema {
      rootDefaultYaml
      allConfigTypes { key ... on CompositeConfigType { fields { name isSecret defaultValueAsJson } } }
    }
  }
}"""


def _location_view(context: WorkspaceRequestContext, location: str) -> dict:
    """The Resources page and the launchpad's config schema of daily_etl, as the UI fetches them."""
    repo = {"repositoryLocationName": location, "repositoryName": "__repository__"}
    job = {**repo, "pipelineName": "daily_etl"}
    shown = execute_dagster_graphql(context, LOCATION_QUERY, {"repo": repo, "job": job})
    resources = {r["name"] for r in shown.data["allTopLevelResourceDetailsOrError"]["results"]}
    assert {"hubspot", "database", "kaggle", "secrets"} <= resources
    return shown.data


def _graphql_views(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    """Runs (with their run config), their event logs and errors, and the code location's config."""
    target = _InProcessModules(
        {"etl_assets": LoadableTargetOrigin(module_name="etl_assets", working_directory=str(REPO))}
    )
    with WorkspaceProcessContext(instance, target) as process_context:
        context = process_context.create_request_context()
        runs = execute_dagster_graphql(context, RUNS_QUERY, {"runIds": run_ids}).data
        assert len(runs["runsOrError"]["results"]) == len(run_ids)
        views = [json.dumps(runs), json.dumps(_location_view(context, "etl_assets"))]
        for run_id in run_ids:
            events = execute_dagster_graphql(context, EVENTS_QUERY, {"runId": run_id}).data
            assert events["logsForRun"]["events"]
            views.append(json.dumps(events))
    return views


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        ("hubspot", "access_token"),
        ("hubspot", "api_base"),
        ("database", "password"),
        ("database", "url"),
        ("kaggle", "key"),
        ("kaggle", "api_token"),
        ("secrets", "secrets_dir"),
        ("secrets", "aws_secret_id"),
        ("secrets", "vault_addr"),
        ("secrets", "vault_path"),
        ("secrets", "gcp_project"),
        ("secrets", "gcp_secrets_endpoint"),
    ],
)
def test_credentials_and_endpoints_cannot_be_resource_config(resource, field):
    """So no code location or run config can set them, or show them in the UI (see test_run_config)."""
    from etl_assets.definitions import defs

    config_fields = type(defs.resources[resource]).to_config_schema().as_field().config_type.fields
    assert field not in config_fields and config_fields.keys() <= {
        "rate_limit",
        "rate_interval_ms",
        "max_in_flight",
        "create_missing_properties",
        "lock_timeout_seconds",
        "dataset",
        "file",
        "cache_seconds",
        "secrets",
    }


def _cloudwatch_lines() -> list[str]:
    logs = boto3.client("logs", region_name="eu-west-1")
    lines = []
    for stream in logs.describe_log_streams(logGroupName=LOG_GROUP)["logStreams"]:
        events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream["logStreamName"], startFromHead=True)[
            "events"
        ]
        lines.extend(event["message"] for event in events)
    return lines


def _run_id(stdout_and_stderr: str, log_lines: list[dict], before: set[str]) -> str:
    new = {line["run_id"] for line in log_lines if line["run_id"]} - before
    assert len(new) == 1, (new, stdout_and_stderr[-3000:])
    return new.pop()


def test_no_secret_value_reaches_logs_events_ui_or_errors(leak_env, hubspot_server, kaggle_server, datadog_intake):
    env = leak_env["env"]
    log_file = Path(env["ETL_LOG_FILE"])

    ok = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=env)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    # All three secrets came from the backend and worked (the database account has no other password).
    assert hubspot_server.contacts_snapshot() and kaggle_server.downloads == 1
    ok_run = _run_id(ok.stderr, [json.loads(line) for line in log_file.read_text().splitlines()], set())

    # Rotate the database password to a wrong one: the next run picks it up and fails on it.
    rotated = {
        "HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN,
        "KAGGLE_KEY": KAGGLE_KEY,
        "ETL_DATABASE_PASSWORD": WRONG_DB_PASSWORD,
        "ETL_DATADOG_API_KEY": DATADOG_KEY,
    }
    leak_env["store"](rotated)
    failed = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=env)
    assert failed.returncode != 0

    # The JSON log file: every line parses, carries the run id, and the asset where there is one.
    log_lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    failed_run = _run_id(failed.stderr, log_lines, {ok_run})
    assert all(line["run_id"] in (ok_run, failed_run) and line["job"] == "daily_etl" for line in log_lines)
    materialized = {line["asset"] for line in log_lines if line["event"] == "ASSET_MATERIALIZATION"}
    assert {"kaggle_dataset", "contacts_table", "hubspot_contacts"} <= materialized
    (failure,) = [line for line in log_lines if line["run_id"] == failed_run and line["event"] == "STEP_FAILURE"]
    assert failure["asset"] == "preflight_checks" and failure["level"] == "ERROR"  # it stops the run first
    assert failure["error_class"] == "PermanentError" and "Access denied" in failure["error"], failure

    # CloudWatch Logs got the same lines (shipped when each run process exited).
    shipped = _cloudwatch_lines()
    shipped_events = {(json.loads(line)["run_id"], json.loads(line)["event"]) for line in shipped}
    expected = {(ok_run, "PIPELINE_SUCCESS"), (failed_run, "STEP_FAILURE"), (failed_run, "PIPELINE_FAILURE")}
    assert expected <= shipped_events
    # So did Datadog, with the key read from the backend.
    datadog_lines = [json.loads(entry["message"]) for entry in datadog_intake.logs()]
    assert expected <= {(line["run_id"], line["event"]) for line in datadog_lines}
    assert set(datadog_intake.statuses()) == {202}

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        graphql = _graphql_views(instance, [ok_run, failed_run])
    assert "Access denied" in "".join(graphql)  # the failing run's error is what the UI shows

    haystacks = {
        "stdout/stderr": [(r.stdout + r.stderr).encode() for r in (ok, failed)],
        "DAGSTER_HOME (event log, runs, snapshots, compute logs)": _files(Path(env["DAGSTER_HOME"])),
        "JSON log files": _files(log_file.parent),
        "CloudWatch Logs": [line.encode() for line in shipped],
        "Datadog intake (request bodies)": datadog_intake.bodies(),
        "data dir": _files(Path(env["ETL_DATA_DIR"])),
        "GraphQL (UI)": [view.encode() for view in graphql],
    }
    leaks = [
        (where, secret)
        for where, texts in haystacks.items()
        for secret in leak_env["canaries"]
        if any(secret.encode() in text for text in texts)
    ]
    assert not leaks


def test_repr_and_database_url_hide_secret_values(monkeypatch):
    from etl_assets.resources.database import DatabaseResource
    from etl_assets.resources.hubspot import HubSpotResource
    from etl_assets.resources.kaggle import KaggleResource
    from etl_assets.resources.secrets import SecretsResource

    monkeypatch.setenv("ETL_SECRETS_BACKEND", "env")
    monkeypatch.setenv("ETL_DATABASE_URL", "mysql+pymysql://etl@db:3306/etl")
    monkeypatch.setenv("ETL_DATABASE_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", HUBSPOT_TOKEN)
    monkeypatch.setenv("KAGGLE_KEY", KAGGLE_KEY)
    secrets = SecretsResource()
    database = DatabaseResource(secrets=secrets)
    resources = [database, HubSpotResource(secrets=secrets), KaggleResource(secrets=secrets)]
    assert resources[1].token() == HUBSPOT_TOKEN
    assert database.describe() == "mysql+pymysql://etl:***@db:3306/etl"
    assert database._url().password == DB_PASSWORD  # the password is there, only never shown
    shown = " ".join([repr(r) for r in resources] + [str(r) for r in resources] + [database.describe()])
    assert not [secret for secret in SECRETS if secret in shown]


TOKEN_CANARY = "hs-CANARY-TOKEN-2d4f"
BODY_CANARY = "BODY-CANARY-7a7a"
DB_URL_CANARY = "DBURL-CANARY-9d9d"
WEBHOOK_CANARY = "WEBHOOK-CANARY-5e5e"
EMAIL_CANARY = "ragged.canary.3c3c@example.com"


def test_canaries_in_error_text_reach_no_output(
    pipeline_env, hubspot_server, kaggle_server, webhook, monkeypatch, tmp_path
):
    from etl_assets_tests.conftest import SAMPLE_CSV
    from etl_assets_tests.test_sensors import tick

    header, *rows = SAMPLE_CSV.read_text().splitlines()
    ragged = rows[2].replace(rows[2].split(",")[9], EMAIL_CANARY) + ",one field too many"
    kaggle_server.add_dataset(
        "datablist",
        "customers",
        {"customers-1000.csv": "\n".join([header, rows[0], rows[1], ragged, *rows[3:]]).encode()},
    )
    # A gateway that echoes what it was sent: the token in HubSpot's message, more in the body.
    hubspot_server.unauthorized_extra = {
        "message": "token {presented} was not accepted",
        "context": {"echo": [BODY_CANARY, "{presented}"]},
    }
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN_CANARY)
    monkeypatch.setenv("ETL_STEP_RETRIES", "0")
    monkeypatch.setenv("ETL_LOG_FILE", str(tmp_path / "logs" / "etl.jsonl"))
    shutil.copy(REPO / "dagster.yaml", Path(pipeline_env["DAGSTER_HOME"]) / "dagster.yaml")
    url, received = webhook.url, webhook.received
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL", f"{url}/{WEBHOOK_CANARY}")
    env = dict(os.environ)

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        cursor = tick(instance, None).cursor  # the sensor alerts failures after its first tick
    results = [run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=env)]
    for bad_url in (f"mysql+pymysql//etl:{DB_URL_CANARY}@db/etl", f"etl:{DB_URL_CANARY}@db/etl"):
        results.append(
            run_dagster(
                "job", "execute", "-m", "etl_assets", "-j", "daily_etl", env={**env, "ETL_DATABASE_URL": bad_url}
            )
        )
    assert all(result.returncode != 0 for result in results)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        tick(instance, cursor)
        run_ids = [run.run_id for run in instance.get_runs()]
        graphql = _graphql_views(instance, run_ids)
    assert len(run_ids) == 3 and len(received) == 3  # one alert per failed run
    errors = " ".join(alert["error"] for alert in received)
    assert "HubSpot rejected the access token (401 INVALID_AUTHENTICATION: token *** was not accepted)" in errors
    assert errors.count("ETL_DATABASE_URL is not a SQLAlchemy URL") == 2

    haystacks = {
        "stdout/stderr": [(r.stdout + r.stderr).encode() for r in results],
        "DAGSTER_HOME (event log, runs, compute logs)": _files(Path(env["DAGSTER_HOME"])),
        "JSON log file": _files(tmp_path / "logs"),
        "GraphQL (UI)": [view.encode() for view in graphql],
        "webhook payloads": [json.dumps(received).encode()],
    }
    canaries = (TOKEN_CANARY, BODY_CANARY, DB_URL_CANARY, WEBHOOK_CANARY, EMAIL_CANARY)
    leaks = [
        (where, canary)
        for where, texts in haystacks.items()
        for canary in canaries
        if any(canary.encode() in text for text in texts)
    ]
    assert not leaks
