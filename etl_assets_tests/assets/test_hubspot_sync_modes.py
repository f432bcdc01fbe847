"""HUBSPOT_SYNC_MODE end to end: the embedded sample (988 contacts), MariaDB, the local HubSpot server.

Exact outcomes in the metadata and in `hubspot_sync_state`, and the batch requests each costs.
"""

import collections

import dagster as dg
import sqlalchemy as sa
from hubspot import HubSpot
from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInputUpsert, SimplePublicObjectBatchInputUpsert

from etl_assets_tests.assets.test_assets import count, materialization, run_daily_etl
from etl_assets_tests.servers.hubspot_server import CONTACTS_PATH, HubSpotServer

LOAD_ONLY = [dg.AssetKey("kaggle_dataset"), dg.AssetKey("contacts_table")]
SYNC_ONLY = [dg.AssetKey("hubspot_contacts")]
SAMPLE = 988


def load(mariadb_url: str) -> list[str]:
    """Load the sample into `contacts`; its emails in email order."""
    assert run_daily_etl(asset_selection=LOAD_ONLY).success
    with sa.create_engine(mariadb_url).connect() as conn:
        return list(conn.execute(sa.text("SELECT email FROM contacts ORDER BY email")).scalars())


def create_elsewhere(server: HubSpotServer, emails: list[str]) -> None:
    """Contacts someone else created in HubSpot before the sync ran."""
    client = HubSpot(access_token=server.token, host=server.url)
    for start in range(0, len(emails), 100):
        inputs = [
            SimplePublicObjectBatchInputUpsert(id_property="email", id=email, properties={"firstname": "Theirs"})
            for email in emails[start : start + 100]
        ]
        client.crm.contacts.batch_api.upsert(BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs))


def sync(server: HubSpotServer) -> tuple[dict, collections.Counter]:
    """Run the sync alone: its metadata, and the contact requests it sent by endpoint (all batch
    endpoints: never one request per contact). Property listing and creation are not counted."""
    server.reset_log()
    result = run_daily_etl(asset_selection=SYNC_ONLY)
    assert result.success
    paths = [record.path for record in server.request_log if record.path.startswith(CONTACTS_PATH)]
    assert all(path.startswith(CONTACTS_PATH + "/batch/") for path in paths)
    return materialization(result, "hubspot_contacts"), collections.Counter(path.rsplit("/", 1)[1] for path in paths)


def states(mariadb_url: str) -> dict[tuple, int]:
    with sa.create_engine(mariadb_url).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, skip_reason, COUNT(*) FROM hubspot_sync_state GROUP BY status, skip_reason")
        ).all()
    return {(status, reason): n for status, reason, n in rows}


def outcome(metadata: dict) -> tuple[int, int, int, int, int]:
    return metadata["created"], metadata["updated"], metadata["skipped"], metadata["failed"], metadata["pending"]


def test_update_only_updates_the_known_skips_the_rest_and_upsert_later_creates_them(
    hubspot_env, mariadb_url, monkeypatch
):
    emails = load(mariadb_url)
    create_elsewhere(hubspot_env, emails[:100])
    monkeypatch.setenv("HUBSPOT_SYNC_MODE", "update_only")
    metadata, requests = sync(hubspot_env)
    assert outcome(metadata) == (0, 100, 888, 0, 0)
    assert metadata["sync_mode"] == "update_only" and metadata["skip_reasons"] == {"NOT_IN_HUBSPOT": 888}
    assert requests == {"read": 10, "update": 1}  # 10 lookups by email, the 100 found in 1 update
    assert len(hubspot_env.contacts_snapshot()) == 100  # nothing created
    assert hubspot_env.contact_by_email(emails[0])["properties"]["firstname"] != "Theirs"
    assert states(mariadb_url) == {("synced", None): 100, ("skipped", "NOT_IN_HUBSPOT"): 888}
    print(f"update_only, {SAMPLE} contacts, 100 known to HubSpot: {dict(requests)}")

    metadata, requests = sync(hubspot_env)  # nothing changed: skipped contacts wait, no request
    assert metadata["due"] == 0 and requests == {}

    monkeypatch.setenv("HUBSPOT_SYNC_MODE", "upsert")  # another mode: the skipped are due now
    metadata, requests = sync(hubspot_env)
    assert outcome(metadata) == (888, 0, 0, 0, 0)
    assert requests == {"upsert": 9}
    assert states(mariadb_url) == {("synced", None): SAMPLE}


def test_update_only_after_a_sync_updates_by_id_with_no_lookup(hubspot_env, mariadb_url, monkeypatch):
    load(mariadb_url)
    sync(hubspot_env)  # upsert: every contact gets its HubSpot id
    with sa.create_engine(mariadb_url).begin() as conn:
        conn.execute(
            sa.text("UPDATE contacts SET content_hash = MD5(CONCAT(content_hash, 'x')) ORDER BY email LIMIT 250")
        )
    monkeypatch.setenv("HUBSPOT_SYNC_MODE", "update_only")
    metadata, requests = sync(hubspot_env)
    assert outcome(metadata) == (0, 250, 0, 0, 0)
    assert set(requests) == {"update"} and requests["update"] <= 3  # 250 by id, no lookup
    print(f"update_only, 250 changed contacts with known ids: {dict(requests)}")


def test_create_only_creates_the_new_and_leaves_existing_contacts_alone(hubspot_env, mariadb_url, monkeypatch):
    emails = load(mariadb_url)
    create_elsewhere(hubspot_env, emails[:100])
    before = {email: hubspot_env.contact_by_email(email) for email in emails[:100]}
    monkeypatch.setenv("HUBSPOT_SYNC_MODE", "create_only")
    metadata, requests = sync(hubspot_env)
    assert outcome(metadata) == (888, 0, 100, 0, 0)
    assert metadata["skip_reasons"] == {"EXISTS_IN_HUBSPOT": 100}
    assert requests == {"create": 10}
    assert all(hubspot_env.contact_by_email(email) == record for email, record in before.items())
    assert states(mariadb_url) == {("synced", None): 888, ("skipped", "EXISTS_IN_HUBSPOT"): 100}
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_sync_state WHERE hubspot_id IS NULL") == 0
    print(f"create_only, {SAMPLE} contacts, 100 existing: {dict(requests)}")

    with sa.create_engine(mariadb_url).begin() as conn:  # every contact changes
        conn.execute(sa.text("UPDATE contacts SET content_hash = MD5(CONCAT(content_hash, 'x'))"))
    metadata, requests = sync(hubspot_env)  # all have ids now: skipped without a request
    assert outcome(metadata) == (0, 0, SAMPLE, 0, 0) and requests == {}
