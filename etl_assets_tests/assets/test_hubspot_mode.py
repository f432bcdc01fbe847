"""`hubspot_contacts` runs live, dry (asked for, or nothing configured), or fails on a token it cannot find.

In-process runs of `daily_etl` on MariaDB, the local HubSpot server and, for the aws backend, a
local Secrets Manager (moto). Kaggle stays on the embedded sample: only HubSpot's settings vary.
"""

import json
import uuid

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets.resources.hubspot import NOTHING_CONFIGURED
from etl_assets_tests.assets.test_assets import (
    WITHOUT_PREFLIGHT,
    count,
    failure_message,
    materialization,
    run_daily_etl,
)
from etl_assets_tests.resources.test_secrets import aws_env, moto_server  # noqa: F401 (fixtures)


def synced_rows(url: str) -> int:
    """Rows of hubspot_sync_state, 0 when the sync never got as far as creating it."""
    if not sa.inspect(sa.create_engine(url)).has_table("hubspot_sync_state"):
        return 0
    return count(url, "SELECT COUNT(*) FROM hubspot_sync_state")


def assert_fails_before_any_request(mariadb_url, hubspot_server, *expected: str) -> str:
    """daily_etl stops at its preflight, before any data moves; the sync run alone fails the same way
    before any request. Returns both messages."""
    stopped = run_daily_etl()
    assert not stopped.success
    first = failure_message(stopped)
    assert not sa.inspect(sa.create_engine(mariadb_url)).has_table("contacts")  # nothing loaded
    forced = run_daily_etl(asset_selection=WITHOUT_PREFLIGHT)
    assert not forced.success
    second = failure_message(forced)
    for message, who in ((first, "preflight_checks: "), (second, "hubspot_contacts: secret HUBSPOT_ACCESS_TOKEN")):
        for part in (who, "secret HUBSPOT_ACCESS_TOKEN is missing", "HUBSPOT_DRY_RUN=true", *expected):
            assert part in message, message
    assert hubspot_server.count_requests() == 0
    assert synced_rows(mariadb_url) == 0
    assert materialization(forced, "contacts_table")["inserted"] == 988  # only the sync failed
    return first + second


def first_sync_log_line(instance: dg.DagsterInstance, result) -> str:
    return next(
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.step_key == "hubspot_contacts" and entry.dagster_event is None
    )


@pytest.mark.parametrize("layout", ["misspelled key", "wrong prefix"])
def test_a_token_the_aws_backend_cannot_find_fails_the_sync(
    hubspot_env, aws_env, mariadb_url, hubspot_server, monkeypatch, layout
):
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    run = uuid.uuid4().hex[:8]
    if layout == "misspelled key":
        secret_id = f"etl_assets/mode-{run}"
        client.create_secret(Name=secret_id, SecretString=json.dumps({"HUBSPOT_ACCES_TOKEN": hubspot_server.token}))
        monkeypatch.setenv("ETL_AWS_SECRET_ID", secret_id)
        where = f"no key HUBSPOT_ACCESS_TOKEN in AWS secret '{secret_id}'"
    else:
        client.create_secret(Name=f"etl_assets/{run}/HUBSPOT_ACCESS_TOKEN", SecretString=hubspot_server.token)
        monkeypatch.setenv("ETL_AWS_SECRET_PREFIX", f"etl-assets/{run}/")
        where = f"no AWS secret 'etl-assets/{run}/HUBSPOT_ACCESS_TOKEN'"
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")  # the token lives in AWS only
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "aws")
    messages = assert_fails_before_any_request(
        mariadb_url, hubspot_server, "aws secrets backend", where, "ETL_SECRETS_BACKEND=aws"
    )
    assert hubspot_server.token not in messages


def test_a_missing_token_file_fails_the_sync_naming_the_path(
    hubspot_env, mariadb_url, hubspot_server, monkeypatch, tmp_path
):
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "files")
    monkeypatch.setenv("ETL_SECRETS_DIR", str(tmp_path / "secrets"))
    for name in ("HUBSPOT_ACCESS_TOKEN", "HUBSPOT_API_BASE"):  # the backend alone asks for a token
        monkeypatch.delenv(name)
    assert_fails_before_any_request(
        mariadb_url, hubspot_server, "files secrets backend", f"no file {tmp_path / 'secrets' / 'HUBSPOT_ACCESS_TOKEN'}"
    )


def test_a_hubspot_setting_without_a_token_fails_the_sync(hubspot_env, mariadb_url, hubspot_server, monkeypatch):
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")
    assert_fails_before_any_request(mariadb_url, hubspot_server, "env secrets backend", "HUBSPOT_API_BASE is set")


def test_hubspot_dry_run_true_sends_nothing_even_with_a_valid_token(
    hubspot_env, mariadb_url, hubspot_server, monkeypatch
):
    monkeypatch.setenv("HUBSPOT_DRY_RUN", "true")
    instance = dg.DagsterInstance.ephemeral()
    result = run_daily_etl(instance)
    assert result.success
    synced = materialization(result, "hubspot_contacts")
    assert (synced["mode"], synced["mode_reason"]) == ("dry run", "HUBSPOT_DRY_RUN=true")
    assert synced["would_send_contacts"] == 988
    assert hubspot_server.count_requests() == 0
    assert synced_rows(mariadb_url) == 0
    assert first_sync_log_line(instance, result) == "HubSpot: dry run (HUBSPOT_DRY_RUN=true)"


def test_nothing_configured_is_a_dry_run_that_says_so(clean_env):
    instance = dg.DagsterInstance.ephemeral()
    result = run_daily_etl(instance)
    assert result.success
    synced = materialization(result, "hubspot_contacts")
    assert (synced["mode"], synced["mode_reason"]) == ("dry run", NOTHING_CONFIGURED)
    assert synced["would_send_contacts"] == 988
    assert first_sync_log_line(instance, result) == f"HubSpot: dry run ({NOTHING_CONFIGURED})"


def test_a_live_run_says_live_and_where_the_token_came_from(hubspot_env, mariadb_url, hubspot_server):
    instance = dg.DagsterInstance.ephemeral()
    result = run_daily_etl(instance)
    assert result.success
    synced = materialization(result, "hubspot_contacts")
    assert (synced["mode"], synced["mode_reason"]) == ("live", "token from the env secrets backend")
    assert synced["created"] == 988
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'synced'") == 988
    assert first_sync_log_line(instance, result) == "HubSpot: live (token from the env secrets backend)"
