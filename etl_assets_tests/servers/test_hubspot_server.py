"""Tests of the fake HubSpot server, driven through the real hubspot-api-client 12.0.0.

The client is built with ``client_side_validation=True`` so its response models reject any
answer that lacks a field HubSpot always sends: a shape mistake in the fake fails here.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3
from hubspot import HubSpot
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInputUpsert,
)
from hubspot.crm.contacts.exceptions import ServiceException, UnauthorizedException
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import PropertyCreate

from etl_assets_tests.servers.hubspot_server import HubSpotServer

RATE_HEADERS = (
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
)


def make_client(server: HubSpotServer, token: str | None = None) -> HubSpot:
    return HubSpot(
        access_token=token or server.token, host=server.url, client_side_validation=True
    )


def upsert_body(*contacts: tuple[str, dict]) -> BatchInputSimplePublicObjectBatchInputUpsert:
    return BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        SimplePublicObjectBatchInputUpsert(id_property="email", id=email, properties=properties)
        for email, properties in contacts
    ])


def upsert(client: HubSpot, *contacts: tuple[str, dict]):
    return client.crm.contacts.batch_api.upsert(
        batch_input_simple_public_object_batch_input_upsert=upsert_body(*contacts),
        _request_timeout=5,
    )


def upsert_with_info(client: HubSpot, *contacts: tuple[str, dict]):
    """(data, status, headers) — the client's way to see response headers."""
    return client.crm.contacts.batch_api.upsert_with_http_info(
        upsert_body(*contacts), _request_timeout=5)


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


def embedded_problems(message: str) -> list[dict]:
    prefix = "Property values were not valid: "
    assert message.startswith(prefix), message
    return json.loads(message[len(prefix):])


@pytest.fixture
def hs():
    with HubSpotServer() as server:
        yield server


@pytest.fixture
def client(hs):
    return make_client(hs)


# ---------------------------------------------------------------------- batch upsert


def test_upsert_creates_then_updates_and_merges(hs, client):
    first = upsert(client, ("Ann@Example.com", {"firstname": "Ann"}))
    assert first.status == "COMPLETE"
    (created,) = first.results
    assert created.new is True
    assert created.id.isdigit()
    assert created.properties["email"] == "ann@example.com"
    assert created.properties["hs_object_id"] == created.id
    assert {"createdate", "lastmodifieddate"} <= set(created.properties)

    second = upsert(client, ("ann@example.com", {"lastname": "Lee"}))
    (updated,) = second.results
    assert updated.new is False
    assert updated.id == created.id
    assert updated.properties["firstname"] == "Ann"  # merged, not replaced
    assert updated.properties["lastname"] == "Lee"

    stored = hs.contacts_snapshot()
    assert list(stored) == ["ann@example.com"]
    assert stored["ann@example.com"]["properties"]["lastname"] == "Lee"


def test_ids_are_sequential_and_a_batch_of_100_is_accepted(client, hs):
    response = upsert(client, *[(f"p{i}@example.com", {"city": "Oslo"}) for i in range(100)])
    ids = [int(result.id) for result in response.results]
    assert ids == list(range(ids[0], ids[0] + 100))
    assert len(hs.contacts_snapshot()) == 100


def test_more_than_100_inputs_is_rejected(client, hs):
    with pytest.raises(ApiException) as caught:
        upsert(client, *[(f"p{i}@example.com", {}) for i in range(101)])
    assert caught.value.status == 400
    body = error_body(caught.value)
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("The maximum number of inputs supported in a batch is 100.")
    assert hs.contacts_snapshot() == {}


@pytest.mark.parametrize("bad", [
    ("not-an-email", {"firstname": "X"}),                   # the id itself
    ("ok@example.com", {"email": "broken@@example.com"}),  # the email property
])
def test_one_invalid_email_fails_the_whole_batch(client, hs, bad):
    with pytest.raises(ApiException) as caught:
        upsert(client, ("good@example.com", {"firstname": "G"}), bad)
    assert caught.value.status == 400
    body = error_body(caught.value)
    assert body["category"] == "VALIDATION_ERROR"
    (problem,) = embedded_problems(body["message"])
    assert problem["isValid"] is False
    assert problem["error"] == "INVALID_EMAIL"
    assert problem["name"] == "email"
    assert problem["localizedErrorMessage"]
    assert hs.contacts_snapshot() == {}  # the good row was not written either


def test_unknown_property_fails_the_batch_unless_the_account_has_it():
    with HubSpotServer(existing_properties=["kaggle_customer_id"]) as server:
        client = make_client(server)
        with pytest.raises(ApiException) as caught:
            upsert(client, ("a@example.com", {"favourite_colour": "red"}))
        (problem,) = embedded_problems(error_body(caught.value)["message"])
        assert problem["error"] == "PROPERTY_DOESNT_EXIST"
        assert problem["name"] == "favourite_colour"

        upsert(client, ("a@example.com", {"kaggle_customer_id": "C-1"}))
        assert server.contacts_snapshot()["a@example.com"]["properties"][
            "kaggle_customer_id"] == "C-1"


def test_enumeration_value_must_be_an_option(client):
    with pytest.raises(ApiException) as caught:
        upsert(client, ("a@example.com", {"lifecyclestage": "friend"}))
    (problem,) = embedded_problems(error_body(caught.value)["message"])
    assert problem["error"] == "INVALID_OPTION"
    assert upsert(client, ("a@example.com", {"lifecyclestage": "lead"})).results[0].new


def test_duplicate_ids_in_one_batch_are_rejected(client, hs):
    with pytest.raises(ApiException) as caught:
        upsert(client, ("dup@example.com", {}), ("DUP@example.com", {}))
    assert caught.value.status == 400
    body = error_body(caught.value)
    assert body["category"] == "VALIDATION_ERROR"
    assert "dup@example.com" in body["message"]
    assert hs.contacts_snapshot() == {}


# ---------------------------------------------------------------------- auth and misc HTTP


def test_bad_token_is_401_and_not_counted_against_the_limit(hs):
    with pytest.raises(UnauthorizedException) as caught:
        upsert(make_client(hs, token="wrong"), ("a@example.com", {}))
    assert caught.value.status == 401
    body = error_body(caught.value)
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    assert caught.value.headers["X-HubSpot-RateLimit-Remaining"] == str(hs.rate_limit)
    assert hs.count_status(401) == 1


def test_unknown_path_is_json_404_with_rate_headers(hs):
    request = urllib.request.Request(
        f"{hs.url}/crm/v3/objects/deals", headers={"Authorization": f"Bearer {hs.token}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 404
    assert caught.value.headers["Content-Type"] == "application/json;charset=utf-8"
    assert all(name in caught.value.headers for name in RATE_HEADERS)
    assert json.loads(caught.value.read())["category"] == "OBJECT_NOT_FOUND"


# ---------------------------------------------------------------------- rate limits


def test_rolling_window_limit_429_and_headers():
    with HubSpotServer(rate_limit=5, interval_ms=1000) as server:
        client = make_client(server)
        remaining = []
        for i in range(5):
            _, status, headers = upsert_with_info(client, (f"r{i}@example.com", {}))
            assert status == 200
            assert headers["X-HubSpot-RateLimit-Max"] == "5"
            assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "1000"
            assert headers["X-HubSpot-RateLimit-Daily"] == "250000"
            remaining.append(int(headers["X-HubSpot-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]

        with pytest.raises(ApiException) as caught:
            upsert(client, ("r5@example.com", {}))
        assert caught.value.status == 429
        body = error_body(caught.value)
        assert body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert "Retry-After" not in caught.value.headers
        assert caught.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert "r5@example.com" not in server.contacts_snapshot()

        assert server.count_status(429) == 1
        assert server.first_429_time() == server.request_log[5].time
        assert server.max_requests_in_window() == 6  # the refused request arrived too

        time.sleep(1.05)  # the window rolls on
        assert upsert(client, ("r5@example.com", {})).results[0].new is True
        assert server.max_requests_in_window(since=server.request_log[-1].time) == 1
        assert server.count_requests("/batch/upsert") == 7
        server.reset_log()
        assert server.count_requests() == 0 and server.first_429_time() is None


def test_daily_limit_and_exhaust_daily():
    with HubSpotServer(daily_limit=2) as server:
        client = make_client(server)
        upsert(client, ("a@example.com", {}))
        _, _, headers = upsert_with_info(client, ("b@example.com", {}))
        assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
        with pytest.raises(ApiException) as caught:
            upsert(client, ("c@example.com", {}))
        assert caught.value.status == 429
        assert error_body(caught.value)["policyName"] == "DAILY"

    with HubSpotServer() as server:
        client = make_client(server)
        server.exhaust_daily()
        with pytest.raises(PropertiesApiException) as caught:
            client.crm.properties.core_api.get_all("contacts", _request_timeout=5)
        assert caught.value.status == 429
        assert error_body(caught.value)["policyName"] == "DAILY"
        assert caught.value.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


def test_scripted_429_hits_only_batch_calls_and_may_carry_retry_after(hs, client):
    hs.script_429(2, retry_after=3)
    client.crm.properties.core_api.get_all("contacts", _request_timeout=5)  # not a batch call
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            upsert(client, ("a@example.com", {}))
        assert caught.value.status == 429
        assert caught.value.headers["Retry-After"] == "3"
        assert error_body(caught.value)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert upsert(client, ("a@example.com", {})).results[0].new is True


# ---------------------------------------------------------------------- properties


def test_properties_list_and_create():
    with HubSpotServer(existing_properties=["customer_id"]) as server:
        client = make_client(server)
        core = client.crm.properties.core_api
        names = {p.name for p in core.get_all("contacts", _request_timeout=5).results}
        assert {"email", "firstname", "lastname", "company", "city", "country", "phone",
                "mobilephone", "website", "hs_object_id", "createdate", "lastmodifieddate",
                "customer_id"} <= names
        # Fields HubSpot always sends, whether or not this client version insists on them.
        assert {"name", "label", "type", "fieldType", "groupName", "description", "options",
                "hidden", "displayOrder", "calculated", "externalOptions", "hasUniqueValue",
                "formField", "modificationMetadata", "createdAt", "updatedAt",
                "archived"} <= set(server.properties[0])

        created = core.create("contacts", property_create=PropertyCreate(
            name="subscription_date", label="Subscription Date", type="date",
            field_type="date", group_name="contactinformation"), _request_timeout=5)
        assert created.name == "subscription_date"
        assert created.modification_metadata.archivable is True
        assert "subscription_date" in {p["name"] for p in server.properties}
        upsert(client, ("a@example.com", {"subscription_date": "2021-03-01"}))

        with pytest.raises(PropertiesApiException) as caught:
            core.create("contacts", property_create=PropertyCreate(
                name="subscription_date", label="Again", type="date",
                field_type="date", group_name="contactinformation"), _request_timeout=5)
        assert caught.value.status == 409
        assert error_body(caught.value)["category"] == "CONFLICT"

        with pytest.raises(PropertiesApiException) as caught:
            core.create("contacts", property_create=PropertyCreate(
                name="no_label", type="string", field_type="text",
                group_name="contactinformation"), _request_timeout=5)
        assert caught.value.status == 400
        body = error_body(caught.value)
        assert body["category"] == "VALIDATION_ERROR" and "label" in body["message"]


# ---------------------------------------------------------------------- batch create


def create(client: HubSpot, *inputs: tuple[dict, str | None]):
    body = BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        SimplePublicObjectBatchInputForCreate(properties=props, object_write_trace_id=trace)
        for props, trace in inputs
    ])
    return client.crm.contacts.batch_api.create_with_http_info(body, _request_timeout=5)


def test_batch_create_201_207_and_409(hs, client):
    data, status, _ = create(client, ({"email": "old@example.com"}, None))
    assert status == 201
    assert data.results[0].properties["email"] == "old@example.com"

    data, status, _ = create(
        client,
        ({"email": "old@example.com"}, "t-old"),
        ({"email": "nope"}, "t-bad"),
        ({"email": "new@example.com"}, "t-new"),
    )
    assert status == 207
    assert data.num_errors == 2
    errors = {e.context["objectWriteTraceId"][0]: e for e in data.errors}
    assert errors["t-old"].category == "CONFLICT"
    assert errors["t-bad"].category == "VALIDATION_ERROR"
    assert [r.properties["email"] for r in data.results] == ["new@example.com"]

    with pytest.raises(ApiException) as caught:
        create(client, ({"email": "old@example.com"}, None), ({"email": "x@example.com"}, None))
    assert caught.value.status == 409
    assert error_body(caught.value)["category"] == "CONFLICT"
    assert set(hs.contacts_snapshot()) == {"old@example.com", "new@example.com"}


# ---------------------------------------------------------------------- faults


def test_error_rate_and_fail_next_surface_as_5xx():
    with HubSpotServer(error_rate=1.0) as server:
        with pytest.raises(ServiceException) as caught:
            upsert(make_client(server), ("a@example.com", {}))
        assert caught.value.status in (500, 502, 503, 504)
        assert server.contacts_snapshot() == {}  # answered before processing

    with HubSpotServer() as server:
        client = make_client(server)
        server.fail_next(503)
        with pytest.raises(ServiceException) as caught:
            upsert(client, ("a@example.com", {}))
        assert caught.value.status == 503
        assert upsert(client, ("a@example.com", {})).results[0].new is True


def test_dropped_connections_raise_urllib3_errors_before_and_after_the_write():
    with HubSpotServer(drop_rate=1.0, seed=1) as server:
        client = make_client(server)
        for i in range(12):
            started = time.monotonic()
            with pytest.raises(urllib3.exceptions.ProtocolError):
                upsert(client, (f"d{i}@example.com", {}))
            assert time.monotonic() - started < 2  # a prompt close, not a hang
        log = server.request_log
        applied = {f"d{i}@example.com" for i, r in enumerate(log) if r.dropped == "after"}
        assert {r.dropped for r in log} == {"before", "after"}
        assert all(r.status is None for r in log)
        assert set(server.contacts_snapshot()) == applied


def test_latency_and_concurrent_clients():
    with HubSpotServer(latency=0.2) as server:
        def one(i: int) -> None:
            upsert(make_client(server), (f"c{i}@example.com", {}))

        started = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 1.5  # each waited, but in parallel
        stored = server.contacts_snapshot()
        assert len(stored) == 8
        assert len({record["id"] for record in stored.values()}) == 8


def test_stop_releases_the_port():
    server = HubSpotServer().start()
    port = server.port
    upsert(make_client(server), ("a@example.com", {}))  # leaves a keep-alive connection open
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
