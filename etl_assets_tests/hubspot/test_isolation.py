"""Which 400 answers are worth isolating record by record, and which refuse a property outright."""

import dataclasses
import json

import pytest

from etl_assets import settings
from etl_assets.contacts.mapping import ColumnMap
from etl_assets.errors import PermanentError
from etl_assets.hubspot import sync
from etl_assets.hubspot.errors import parse_error, refused_property
from etl_assets.hubspot.sync import SyncReport, sync_contacts
from etl_assets_tests.hubspot.test_sync import COLUMN_MAP, LOG, api_for, contact, pending, run_sync
from etl_assets_tests.servers.hubspot_server import HubSpotServer

# HubSpot's real v3 answer to an unknown property (the facts file, "captured in public code").
REAL_PROPERTY_DOESNT_EXIST = (
    '{"status":"error","message":"Property values were not valid: [{\\"isValid\\":false,\\"message\\":'
    '\\"Property \\\\\\"description\\\\\\" does not exist\\",\\"error\\":\\"PROPERTY_DOESNT_EXIST\\",'
    '\\"name\\":\\"description\\"}]","correlationId":"c0ffee","errors":[{"message":"Property \\"description\\" '
    'does not exist","code":"PROPERTY_DOESNT_EXIST","context":{"propertyName":["description"]}}],'
    '"category":"VALIDATION_ERROR"}'
)


def answer(*items: tuple[str, str]) -> str:
    """A v3 400 body with one errors[] item per (property, code)."""
    return json.dumps(
        {
            "status": "error",
            "message": "Property values were not valid: [...]",
            "category": "VALIDATION_ERROR",
            "errors": [{"message": "...", "code": code, "context": {"propertyName": [name]}} for name, code in items],
        }
    )


def test_the_real_unknown_property_answer_refuses_the_property():
    error = parse_error(400, REAL_PROPERTY_DOESNT_EXIST)
    assert error.problems == (("description", "PROPERTY_DOESNT_EXIST"),)
    assert refused_property(error, 100) == ("description", "PROPERTY_DOESNT_EXIST")


@pytest.mark.parametrize(
    ("body", "inputs", "refused"),
    [
        (answer(("createdate", "READ_ONLY_VALUE")), 100, ("createdate", "READ_ONLY_VALUE")),
        (answer(("email", "INVALID_EMAIL"), ("createdate", "READ_ONLY_VALUE")), 100, ("createdate", "READ_ONLY_VALUE")),
        (answer(*[("subscription_date", "INVALID_LONG")] * 100), 100, ("subscription_date", "INVALID_LONG")),
        # the same wrong type for every contact, plus one bad email
        (answer(*[("country", "INVALID_OPTION")] * 3, ("email", "INVALID_EMAIL")), 3, ("country", "INVALID_OPTION")),
        # record-specific: isolate
        (answer(("email", "INVALID_EMAIL")), 100, None),
        (answer(*[("email", "INVALID_EMAIL")] * 100), 100, None),  # each contact's own address
        (answer(*[("subscription_date", "INVALID_DATE")] * 99), 100, None),  # one contact's date is fine
        (answer(("lifecyclestage", "INVALID_OPTION")), 1, None),  # a lone contact's bad value
        ('{"status":"error","message":"Duplicate IDs found in batch input","category":"VALIDATION_ERROR"}', 2, None),
    ],
)
def test_classification(body, inputs, refused):
    assert refused_property(parse_error(400, body), inputs) == refused


def test_a_read_only_property_is_refused_by_the_server_as_hubspot_does_and_stops_the_sync():
    column_map = ColumnMap(
        tuple(
            dataclasses.replace(spec, hubspot="createdate") if spec.field == "subscription_date" else spec
            for spec in COLUMN_MAP.fields
        ),
        origin="test",
    )
    rows = [contact(i) for i in range(1000)]
    recorded = []
    with HubSpotServer(existing_properties=["source_customer_id"]) as server:
        with pytest.raises(
            PermanentError,
            match=r"HubSpot refuses property 'createdate' for every contact "
            r"\(READ_ONLY_VALUE\): remove it from the column map",
        ):
            sync_contacts(api_for(server), pending(rows, column_map), recorded.extend, SyncReport(due=1000), LOG)
        upserts = server.count_requests("/batch/upsert")
    # the batches in flight; halving would have spent ~199 per batch
    assert upserts <= settings.default_value(settings.HUBSPOT_MAX_IN_FLIGHT)
    assert recorded == [] and not server.contacts_snapshot()


def test_past_the_cap_refused_batches_stay_pending(monkeypatch):
    monkeypatch.setattr(sync, "MAX_ISOLATION_REQUESTS", 6)
    bad = {i: f"p{i}@mail.invalid" for i in (5, 150, 250)}  # one in each of 3 batches
    rows = [contact(i, bad.get(i)) for i in range(300)]
    with HubSpotServer(existing_properties=["source_customer_id", "subscription_date"]) as server:
        report, outcomes = run_sync(api_for(server), rows, max_in_flight=1)
        upserts = server.count_requests("/batch/upsert")
    # Batch 1 splits 100 > 50 > 25 > 12 (6 requests); its bad dozen and batches 2 and 3 wait, unsent again.
    assert report.isolation_requests == 6 and upserts == 3 + 6
    assert (report.created, report.failed, report.pending, report.unisolated) == (88, 0, 212, 212)
    assert len(outcomes) == 88 and not set(bad.values()) & set(outcomes)
