"""Results matched by what HubSpot says: 207 answers, merged contacts, secondary emails, edge pages."""

import dataclasses

import pytest
import sqlalchemy as sa

from etl_assets.hubspot import state
from etl_assets.hubspot.sync import (
    MAX_UNMATCHED_RUNS,
    UNMATCHED,
    ContactOutcome,
    Pending,
    SyncReport,
    UpsertAnswer,
    match_answer,
    sync_contacts,
)
from etl_assets_tests.hubspot.test_sync import LOG, api_for, contact, pending, run_sync
from etl_assets_tests.servers.hubspot_server import HubSpotServer

PROPERTIES = ["source_customer_id", "subscription_date"]


def sync_pending(server: HubSpotServer, contacts: list[Pending]):
    recorded: list[ContactOutcome] = []
    report = SyncReport(due=len(contacts))
    sync_contacts(api_for(server), contacts, recorded.extend, report, LOG)
    return report, {item.email: item for item in recorded}


def test_a_207_answer_fails_only_the_contacts_it_names():
    rows = [contact(i) for i in range(10)]
    with HubSpotServer(existing_properties=PROPERTIES) as server:
        server.upsert_errors = {
            "person3@example.com": ("VALIDATION_ERROR", "Property values were not valid"),
            "person7@example.com": ("INTERNAL_ERROR", "Something went wrong"),
        }
        report, outcomes = run_sync(api_for(server), rows)
        stored = server.contacts_snapshot()
        upserts = server.count_requests("/batch/upsert")
    assert (report.created, report.failed, report.pending) == (8, 2, 0) and upserts == 1
    assert set(stored) == {row["email"] for row in rows} - {"person3@example.com", "person7@example.com"}
    data, internal = outcomes["person3@example.com"], outcomes["person7@example.com"]
    assert (data.error_category, data.transient) == ("VALIDATION_ERROR", False)  # waits for its data to change
    assert (internal.error_category, internal.transient) == ("INTERNAL_ERROR", True)  # sent again next run
    assert all(
        outcomes[row["email"]].hubspot_id == stored[row["email"]]["id"] for row in rows if row["email"] in stored
    )


def test_a_secondary_email_is_recorded_with_the_owners_id_and_creates_nothing():
    with HubSpotServer(existing_properties=PROPERTIES) as server:
        run_sync(api_for(server), [contact(0, "owner@example.com")])
        server.add_secondary_email("owner@example.com", "person1@example.com")
        owner_id = server.contact_by_email("owner@example.com")["id"]
        report, outcomes = run_sync(api_for(server), [contact(i) for i in range(1, 40)])
        created = server.created_count()
    found = outcomes["person1@example.com"]
    assert (found.outcome, found.hubspot_id) == ("secondary_email", owner_id)
    assert (report.created, report.updated, report.other_address["secondary_email"]) == (38, 1, 1)
    assert created == 1 + 38  # the owner and the 38 others: person1 was not created a second time


def test_merged_contacts_are_recorded_with_the_surviving_id():
    rows = [contact(i) for i in range(60)]
    keepers = ["keeper1@example.com", "keeper2@example.com"]
    with HubSpotServer(existing_properties=PROPERTIES) as server:
        _report, first = run_sync(api_for(server), rows + [contact(100 + i, email) for i, email in enumerate(keepers)])
        # two contacts merged into others in HubSpot: one batch answers for both under other emails
        server.merge_contacts(keepers[0], "person11@example.com")
        server.merge_contacts(keepers[1], "person21@example.com")
        survivors = [server.contact_by_email(email)["id"] for email in keepers]
        changed = [
            dataclasses.replace(
                item, properties={**item.properties, "firstname": "Changed"}, hubspot_id=first[item.email].hubspot_id
            )
            for item in pending(rows)
        ]
        report, outcomes = sync_pending(server, changed)
        created = server.created_count()
    assert [
        (outcomes[email].outcome, outcomes[email].hubspot_id)
        for email in ("person11@example.com", "person21@example.com")
    ] == [("merged", id_) for id_ in survivors]
    assert (report.updated, report.failed, report.other_address["merged"]) == (60, 0, 2)
    # two results could not be told apart by email: each contact was sent again alone, once
    assert report.isolation_requests == 2
    assert created == 62


def test_html_pages_from_the_edge_are_retried():
    with HubSpotServer(existing_properties=PROPERTIES) as server:
        server.fail_next(502, html=True)
        server.fail_next(504, html=True)
        report, _outcomes = run_sync(api_for(server), [contact(i) for i in range(5)])
        statuses = [record.status for record in server.request_log if "/batch/" in record.path]
    assert report.created == 5 and statuses == [502, 504, 200]


@pytest.mark.fast
def test_match_answer_pairs_the_last_contact_with_the_last_result_and_leaves_ambiguity_unmatched():
    batch = [Pending(f"p{i}@example.com", f"{i:032x}", {}) for i in range(3)]
    results = [
        {"id": "1", "properties": {"email": "p0@example.com"}, "new": True},
        {"id": "7", "properties": {"email": "other@example.com"}},
    ]
    outcomes, left = match_answer(batch, UpsertAnswer(results))
    assert [(o.email, o.outcome, o.hubspot_id) for o in outcomes] == [("p0@example.com", "created", "1")]
    assert left == batch[1:]  # two contacts, one foreign result: which is whose cannot be told
    outcomes, left = match_answer(batch[1:2], UpsertAnswer(results[1:]))
    assert [(o.outcome, o.hubspot_id) for o in outcomes] == [("secondary_email", "7")] and not left


def test_an_unmatched_contact_is_sent_on_a_bounded_number_of_runs(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    state.ensure_table(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE contacts (email VARCHAR(254) PRIMARY KEY, content_hash CHAR(32))"))
        conn.execute(
            sa.text("INSERT INTO contacts VALUES ('a@example.com', :h), ('b@example.com', :h)"), {"h": "0" * 32}
        )
    unmatched = ContactOutcome(
        "a@example.com", "0" * 32, "failed", error_category=UNMATCHED, error_message="x", transient=True
    )
    busy = dataclasses.replace(unmatched, email="b@example.com", error_category="INTERNAL_ERROR")
    due = []
    for run in range(MAX_UNMATCHED_RUNS + 1):
        state.record_outcomes(engine, [unmatched, busy], f"run{run}")
        with engine.connect() as conn:
            due.append(state.count_due(conn))
    # a's last send was its third: it waits (reported failed); b's internal error is always sent again
    assert due == [2, 2, 1, 1]
    state.record_outcomes(engine, [dataclasses.replace(unmatched, outcome="updated", error_category=None)], "ok")
    with engine.connect() as conn:
        attempts = conn.execute(sa.text("SELECT attempts FROM hubspot_sync_state WHERE email = 'a@example.com'"))
        assert attempts.scalar_one() == 0  # attempts count since HubSpot last accepted the contact
