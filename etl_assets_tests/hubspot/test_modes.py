"""Each sync mode against the local HubSpot server, through the real hubspot-api-client: exact
outcomes, and exactly which batch requests they cost (never one per contact)."""

import collections
import dataclasses

import pytest

from etl_assets.hubspot import modes
from etl_assets.hubspot.client import HubSpotApi
from etl_assets.hubspot.sync import SyncReport, sync_contacts
from etl_assets.hubspot.writers import batch_sender
from etl_assets_tests.hubspot.test_sync import LOG, api_for, contact, pending
from etl_assets_tests.servers.hubspot_server import HubSpotServer

PROPERTIES = ["source_customer_id", "subscription_date"]
ROWS = [contact(i) for i in range(250)]
EXISTING = 100  # person0..person99 are in HubSpot before each test


def run(server: HubSpotServer, mode: str, contacts) -> tuple[SyncReport, dict, collections.Counter]:
    """Sync `contacts` in `mode`; returns the report, outcomes by email and requests by endpoint."""
    server.reset_log()
    api, recorded = api_for(server), []
    report = SyncReport(due=len(contacts))
    sync_contacts(api, contacts, recorded.extend, report, LOG, send=batch_sender(mode, api, report))
    requests = collections.Counter(record.path.rsplit("/", 1)[1] for record in server.request_log)
    assert all("/batch/" in record.path for record in server.request_log)  # batch endpoints only
    return report, {item.email: item for item in recorded}, requests


@pytest.fixture
def server():
    with HubSpotServer(existing_properties=PROPERTIES) as hs:
        run(hs, modes.UPSERT, pending(ROWS[:EXISTING]))
        yield hs


def counts(report: SyncReport) -> tuple[int, int, int, int]:
    return report.created, report.updated, report.skipped, report.failed


def test_upsert_creates_the_new_and_updates_the_known_in_one_request_per_100(server):
    report, _, requests = run(server, modes.UPSERT, pending(ROWS))
    assert counts(report) == (150, 100, 0, 0)
    assert requests == {"upsert": 3}


def test_update_only_never_creates_and_skips_emails_hubspot_does_not_know(server):
    report, outcomes, requests = run(server, modes.UPDATE_ONLY, pending(ROWS))
    assert counts(report) == (0, 100, 150, 0) and report.skip_reasons == {"NOT_IN_HUBSPOT": 150}
    assert requests == {"read": 3, "update": 1}  # one lookup per 100 unknown; the 100 found in one update
    assert len(server.contacts_snapshot()) == EXISTING  # nothing created
    skipped = outcomes["person200@example.com"]
    assert (skipped.outcome, skipped.skip_reason, skipped.hubspot_id) == ("skipped", "NOT_IN_HUBSPOT", None)
    updated = outcomes["person5@example.com"]
    assert updated.hubspot_id == server.contact_by_email("person5@example.com")["id"]
    print(f"update_only, 250 contacts, ids unknown: {sum(requests.values())} requests {dict(requests)}")

    # Next run the ids are known (hubspot_sync_state hands them in): no lookup at all.
    known = [dataclasses.replace(c, hubspot_id=outcomes[c.email].hubspot_id) for c in pending(ROWS[:EXISTING])]
    report, _, requests = run(server, modes.UPDATE_ONLY, known)
    assert counts(report) == (0, 100, 0, 0) and requests == {"update": 1}


def test_update_only_skips_a_contact_whose_known_id_is_gone_and_updates_the_rest(server):
    ids = {email: record["id"] for email, record in server.contacts_snapshot().items()}
    gone = "person7@example.com"
    server.contacts.pop(gone)  # deleted in HubSpot by someone else
    known = [dataclasses.replace(c, hubspot_id=ids[c.email]) for c in pending(ROWS[:EXISTING])]
    report, outcomes, requests = run(server, modes.UPDATE_ONLY, known)
    assert counts(report) == (0, 99, 1, 0)
    assert outcomes[gone].skip_reason == "NOT_IN_HUBSPOT" and outcomes[gone].hubspot_id is None
    assert requests == {"update": 2}  # refused once naming the id, then the 99 others


def test_update_only_writes_a_contact_found_by_its_secondary_email_without_changing_its_email(server):
    server.add_secondary_email("person1@example.com", "alias@example.com")
    report, outcomes, requests = run(server, modes.UPDATE_ONLY, pending([contact(999, "alias@example.com")]))
    assert counts(report) == (0, 1, 0, 0) and outcomes["alias@example.com"].outcome == "secondary_email"
    stored = server.contact_by_email("alias@example.com")
    assert stored["properties"]["email"] == "person1@example.com" and stored["properties"]["firstname"] == "P999"
    assert requests == {"read": 1, "update": 1}


def test_create_only_never_changes_an_existing_contact(server):
    before = server.contacts_snapshot()
    report, outcomes, requests = run(server, modes.CREATE_ONLY, pending(ROWS))
    assert counts(report) == (150, 0, 100, 0) and report.skip_reasons == {"EXISTS_IN_HUBSPOT": 100}
    assert requests == {"create": 3}  # the existing ones fail alone inside their batch (207)
    after = server.contacts_snapshot()
    assert all(after[email] == record for email, record in before.items())  # untouched
    existing = outcomes["person3@example.com"]
    assert (existing.outcome, existing.hubspot_id) == ("skipped", before["person3@example.com"]["id"])
    print(f"create_only, 250 contacts (100 existing): {sum(requests.values())} requests {dict(requests)}")

    # Contacts HubSpot gave an id before are skipped without asking it.
    known = [dataclasses.replace(c, hubspot_id="1") for c in pending(ROWS[:EXISTING])]
    report, _, requests = run(server, modes.CREATE_ONLY, known)
    assert counts(report) == (0, 0, 100, 0) and requests == {}


def test_create_only_isolates_existing_emails_when_hubspot_refuses_the_whole_batch(server, monkeypatch):
    """Without per-input trace ids HubSpot answers 409 for the batch, naming one existing id only
    (hubspot-api-python#51): the batch is halved until each existing contact stands alone."""
    with_trace_ids = HubSpotApi.create_contacts
    monkeypatch.setattr(
        HubSpotApi,
        "create_contacts",
        lambda api, inputs: with_trace_ids(api, [{**item, "objectWriteTraceId": None} for item in inputs]),
    )
    rows = [contact(i) for i in (3, 500, 501, 502)]
    report, outcomes, requests = run(server, modes.CREATE_ONLY, pending(rows))
    assert counts(report) == (3, 0, 1, 0)
    assert outcomes["person3@example.com"].hubspot_id == server.contact_by_email("person3@example.com")["id"]
    assert requests == {"create": 1 + 2 * report.split_batches}
