"""The HubSpot token rotated or revoked in the middle of a 5,000-contact sync, through the real step.

`contacts` is loaded straight from a generated CSV (no Kaggle server); then only
`hubspot_contacts` runs, against the local HubSpot server, while a thread rotates the token
after a number of upsert requests.
"""

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import dagster as dg
import pytest

from etl_assets import settings
from etl_assets.assets.contacts import load_source
from etl_assets.contacts.mapping import load_column_map
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets_tests.assets.test_assets import count, failure_message, materialization, run_daily_etl
from etl_assets_tests.conftest import REPO
from etl_assets_tests.servers.hubspot_server import UPSERT_PATH, HubSpotServer

CONTACTS = 5_000
ROTATE_AFTER_UPSERTS = 20  # of 50
HUBSPOT = [dg.AssetKey("hubspot_contacts")]
SYNCED = "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'synced'"


@pytest.fixture
def contacts_loaded(hubspot_env, tmp_path):
    """5,000 valid contacts in `contacts`, and HubSpot settings pointed at the local server."""
    hubspot_server = hubspot_env
    hubspot_server.latency = 0.02  # keeps batches in flight when the token changes
    sys.path.insert(0, str(REPO / "scripts"))
    from generate_sample_dataset import write_csv

    csv_path = tmp_path / "contacts.csv"
    write_csv(csv_path, CONTACTS, seed=13, dirty=False)
    report = load_source(
        DatabaseResource(secrets=SecretsResource()),
        csv_path,
        load_column_map(None),
        settings.retry_settings(),
        "load-for-rotation",
        logging.getLogger(__name__),
    )
    assert report.inserted == CONTACTS


def after_upserts(server: HubSpotServer, upserts: int, action: Callable[[], None]) -> threading.Thread:
    def watch() -> None:
        while server.count_requests(UPSERT_PATH) < upserts:
            time.sleep(0.002)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def upserted_inputs(server: HubSpotServer) -> int:
    """Contacts HubSpot accepted: with no duplicate sends, exactly the contacts synced."""
    return sum(r.n_inputs for r in server.request_log if r.path == UPSERT_PATH and r.status == 200)


def step_retries(result) -> int:
    return sum(event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for event in result.all_events)


def test_token_rotated_mid_sync_every_contact_is_synced_once(contacts_loaded, hubspot_server, mariadb_url):
    def rotate_and_expire_now() -> None:  # the secret updated first, as a rotation runbook does
        os.environ["HUBSPOT_ACCESS_TOKEN"] = "rotated-token"
        hubspot_server.rotate_token("rotated-token")

    watcher = after_upserts(hubspot_server, ROTATE_AFTER_UPSERTS, rotate_and_expire_now)
    result = run_daily_etl(asset_selection=HUBSPOT)
    watcher.join(timeout=5)

    assert result.success
    assert hubspot_server.token == "rotated-token"
    assert len(hubspot_server.contacts_snapshot()) == CONTACTS
    assert upserted_inputs(hubspot_server) == CONTACTS  # each contact accepted exactly once
    # at most the batches in flight at the rotation
    assert 1 <= hubspot_server.count_status(401) <= settings.default_value(settings.HUBSPOT_MAX_IN_FLIGHT)
    assert count(mariadb_url, SYNCED) == CONTACTS
    synced = materialization(result, "hubspot_contacts")
    assert (synced["created"], synced["pending"], synced["failed"]) == (CONTACTS, 0, 0)


def test_token_revoked_mid_sync_fails_naming_the_contacts_synced_and_the_next_run_sends_the_rest(
    contacts_loaded, hubspot_server, mariadb_url, monkeypatch
):
    watcher = after_upserts(hubspot_server, ROTATE_AFTER_UPSERTS, lambda: hubspot_server.rotate_token("new-token"))
    result = run_daily_etl(asset_selection=HUBSPOT)
    watcher.join(timeout=5)

    assert not result.success
    assert step_retries(result) == 0
    synced = count(mariadb_url, SYNCED)
    assert ROTATE_AFTER_UPSERTS * 100 - 400 <= synced < CONTACTS
    assert synced == upserted_inputs(hubspot_server) == len(hubspot_server.contacts_snapshot())
    message = failure_message(result)
    assert (
        "HubSpot rejected the access token (401 INVALID_AUTHENTICATION: Authentication credentials not found."
    ) in message
    assert f"after {synced:,} contacts were synced in this run; the rest stay pending for the next run" in message

    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "new-token")
    hubspot_server.reset_log()
    result = run_daily_etl(asset_selection=HUBSPOT)
    assert result.success
    assert upserted_inputs(hubspot_server) == CONTACTS - synced  # only the rest
    assert hubspot_server.count_status(401) == 0
    assert count(mariadb_url, SYNCED) == len(hubspot_server.contacts_snapshot()) == CONTACTS
