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
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
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
    return HubSpot(access_token=token or server.token, host=server.url, client_side_validation=True)


def upsert_body(*contacts: tuple[str, dict]) -> BatchInputSimplePublicObjectBatchInputUpsert:
    return BatchInputSimplePublicObjectBatchInputUpsert(
        inputs=[
            SimplePublicObjectBatchInputUpsert(id_property="email", id=email, properties=properties)
            for email, properties in contacts
        ]
    )


def upsert(client: HubSpot, *contacts: tuple[str, dict]):
    return client.crm.contacts.batch_api.upsert(
        batch_input_simple_public_object_batch_input_upsert=upsert_body(*contacts),
        _request_timeout=5,
    )


def upsert_with_info(client: HubSpot, *contacts: tuple[str, dict]):
    """(data, status, headers) — the client's way to see response headers."""
    return client.crm.contacts.batch_api.upsert_with_http_info(upsert_body(*contacts), _request_timeout=5)


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


def embedded_problems(message: str) -> list[dict]:
    prefix = "Property values were not valid: "
    assert message.startswith(prefix), message
    return json.loads(message[len(prefix) :])


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
    assert updated.properties["lastname"] == "Lee"
    assert "firstname" not in updated.properties  # results carry only what the input sent

    stored = hs.contacts_snapshot()
    assert list(stored) == ["ann@example.com"]
    assert stored["ann@example.com"]["properties"]["firstname"] == "Ann"  # merged, not replaced
    assert stored["ann@example.com"]["properties"]["lastname"] == "Lee"


def test_ids_are_sequential_and_a_batch_of_100_is_accepted(client, hs):
    response = upsert(client, *[(f"p{i}@example.com", {"city": "Oslo"}) for i in range(100)])
    ids = sorted(int(result.id) for result in response.results)  # results come shuffled
    assert ids == list(range(ids[0], ids[0] + 100))
    assert len(hs.contacts_snapshot()) == 100
    assert hs.created_count() == 100


def test_more_than_100_inputs_is_rejected(client, hs):
    with pytest.raises(ApiException) as caught:
        upsert(client, *[(f"p{i}@example.com", {}) for i in range(101)])
    assert caught.value.status == 400
    body = error_body(caught.value)
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("The maximum number of inputs supported in a batch is 100.")
    assert hs.contacts_snapshot() == {}


@pytest.mark.parametrize(
    "bad",
    [
        ("not-an-email", {"firstname": "X"}),  # the id itself
        ("ok@example.com", {"email": "broken@@example.com"}),  # the email property
    ],
)
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
        assert server.contacts_snapshot()["a@example.com"]["properties"]["kaggle_customer_id"] == "C-1"


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
    request = urllib.request.Request(f"{hs.url}/crm/v3/objects/deals", headers={"Authorization": f"Bearer {hs.token}"})
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
        assert {
            "email",
            "firstname",
            "lastname",
            "company",
            "city",
            "country",
            "phone",
            "mobilephone",
            "website",
            "hs_object_id",
            "createdate",
            "lastmodifieddate",
            "customer_id",
        } <= names
        # Fields HubSpot always sends, whether or not this client version insists on them.
        assert {
            "name",
            "label",
            "type",
            "fieldType",
            "groupName",
            "description",
            "options",
            "hidden",
            "displayOrder",
            "calculated",
            "externalOptions",
            "hasUniqueValue",
            "formField",
            "modificationMetadata",
            "createdAt",
            "updatedAt",
            "archived",
        } <= set(server.properties[0])

        created = core.create(
            "contacts",
            property_create=PropertyCreate(
                name="subscription_date",
                label="Subscription Date",
                type="date",
                field_type="date",
                group_name="contactinformation",
            ),
            _request_timeout=5,
        )
        assert created.name == "subscription_date"
        assert created.modification_metadata.archivable is True
        assert "subscription_date" in {p["name"] for p in server.properties}
        upsert(client, ("a@example.com", {"subscription_date": "2021-03-01"}))

        with pytest.raises(PropertiesApiException) as caught:
            core.create(
                "contacts",
                property_create=PropertyCreate(
                    name="subscription_date",
                    label="Again",
                    type="date",
                    field_type="date",
                    group_name="contactinformation",
                ),
                _request_timeout=5,
            )
        assert caught.value.status == 409
        assert error_body(caught.value)["category"] == "CONFLICT"

        with pytest.raises(PropertiesApiException) as caught:
            core.create(
                "contacts",
                property_create=PropertyCreate(
                    name="no_label", type="string", field_type="text", group_name="contactinformation"
                ),
                _request_timeout=5,
            )
        assert caught.value.status == 400
        body = error_body(caught.value)
        assert body["category"] == "VALIDATION_ERROR" and "label" in body["message"]


# ---------------------------------------------------------------------- batch create


def create(client: HubSpot, *inputs: tuple[dict, str | None]):
    body = BatchInputSimplePublicObjectBatchInputForCreate(
        inputs=[
            SimplePublicObjectBatchInputForCreate(properties=props, object_write_trace_id=trace)
            for props, trace in inputs
        ]
    )
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


# ---------------------------------------------------------------------- property definitions


def test_define_property_is_listed_and_read_by_the_real_client(hs, client):
    hs.define_property("plan", "enumeration", options=["free", ("pro", "Professional")], label="Plan")
    hs.define_property("score", "number", calculated=True)
    hs.define_property("locked_note", "string", read_only=True)
    hs.define_property("pipeline_stage", "enumeration", external_options=True)
    hs.define_property("is_vip", "bool", hubspot_defined=True)
    hs.define_property("signup_day", "date")
    hs.define_property("last_seen", "datetime")

    listed = {p.name: p for p in client.crm.properties.core_api.get_all("contacts", _request_timeout=5).results}
    plan = listed["plan"]
    assert (plan.type, plan.field_type, plan.label) == ("enumeration", "select", "Plan")
    assert [(o.value, o.label, o.display_order) for o in plan.options] == [
        ("free", "free", 0),
        ("pro", "Professional", 1),
    ]
    assert plan.calculated is False and plan.external_options is False
    assert plan.modification_metadata.read_only_value is False
    assert plan.hubspot_defined is None  # HubSpot sends the flag only on its own properties

    score = listed["score"]
    assert score.calculated is True
    assert score.field_type == "calculation_equation"
    assert score.modification_metadata.read_only_value is True
    assert listed["locked_note"].modification_metadata.read_only_value is True
    assert listed["locked_note"].calculated is False
    assert listed["pipeline_stage"].external_options is True
    assert listed["is_vip"].hubspot_defined is True
    assert listed["is_vip"].field_type == "booleancheckbox"
    assert listed["signup_day"].field_type == "date"
    assert listed["last_seen"].field_type == "date" and listed["last_seen"].type == "datetime"

    additional = listed["hs_additional_emails"]
    assert additional.type == "string"
    assert additional.hubspot_defined is True
    assert additional.modification_metadata.read_only_value is True

    with pytest.raises(ValueError):
        hs.define_property("bad", "text")  # a field type, not a type


def test_define_property_replaces_a_property_and_its_type():
    with HubSpotServer() as server:
        client = make_client(server)
        client.crm.properties.core_api.create(
            "contacts",
            property_create=PropertyCreate(
                name="subscription_date",
                label="Subscription Date",
                type="date",
                field_type="date",
                group_name="contactinformation",
            ),
            _request_timeout=5,
        )
        upsert(client, ("a@example.com", {"subscription_date": "2021-03-01"}))

        server.define_property("subscription_date", "number")
        (definition,) = [p for p in server.properties if p["name"] == "subscription_date"]
        assert (definition["type"], definition["fieldType"]) == ("number", "number")
        with pytest.raises(ApiException) as caught:
            upsert(client, ("a@example.com", {"subscription_date": "2021-03-02"}))
        (problem,) = embedded_problems(error_body(caught.value)["message"])
        assert problem["error"] == "INVALID_LONG"
        upsert(client, ("a@example.com", {"subscription_date": "17"}))

        server.define_property("city", "number")  # a standard property
        with pytest.raises(ApiException) as caught:
            upsert(client, ("a@example.com", {"city": "Oslo"}))
        (problem,) = embedded_problems(error_body(caught.value)["message"])
        assert (problem["name"], problem["error"]) == ("city", "INVALID_LONG")
        assert server.contact_by_email("a@example.com")["properties"]["subscription_date"] == "17"


# ---------------------------------------------------------------------- values per type


@pytest.fixture
def typed(hs):
    hs.define_property("signup_day", "date")
    hs.define_property("last_seen", "datetime")
    hs.define_property("orders", "number")
    hs.define_property("is_vip", "bool")
    return hs


def value_error(client, name: str, value: str) -> dict | None:
    """The single problem HubSpot reports for ``name: value``, or None when it is accepted."""
    try:
        upsert(client, ("v@example.com", {name: value}))
    except ApiException as exc:
        assert exc.status == 400
        body = error_body(exc)
        assert body["category"] == "VALIDATION_ERROR"
        (problem,) = embedded_problems(body["message"])
        (item,) = body["errors"]
        assert item == {"message": problem["message"], "code": problem["error"], "context": {"propertyName": [name]}}
        return problem
    return None


@pytest.mark.parametrize(
    "name, value",
    [
        ("signup_day", "2021-03-01"),
        ("signup_day", "1614556800000"),  # 2021-03-01T00:00:00Z in ms
        ("signup_day", "0"),
        ("last_seen", "2021-03-01T12:30:00Z"),
        ("last_seen", "1997-07-16T19:20:30.45+01:00"),
        ("last_seen", "2021-03-01T12:30:00.123-05:00"),
        ("last_seen", "1614601800123"),
        ("orders", "17"),
        ("orders", "-3.25"),
        ("is_vip", "true"),
        ("is_vip", "false"),
        ("lifecyclestage", "lead"),
    ],
)
def test_valid_values_are_stored(typed, client, name, value):
    assert value_error(client, name, value) is None
    assert typed.contact_by_email("v@example.com")["properties"][name] == value


@pytest.mark.parametrize(
    "name, value, code",
    [
        ("signup_day", "2021-02-30", "INVALID_DATE"),  # no such day
        ("signup_day", "2021-3-1", "INVALID_DATE"),
        ("signup_day", "01/03/2021", "INVALID_DATE"),
        ("signup_day", "2021-03-01T00:00:00Z", "INVALID_DATE"),
        ("signup_day", "1614556800", "INVALID_DATE"),  # epoch seconds
        ("last_seen", "2021-03-01T12:30:00", "INVALID_DATETIME"),  # no zone
        ("last_seen", "2021-03-01", "INVALID_DATETIME"),
        ("last_seen", "2021-03-01 12:30:00Z", "INVALID_DATETIME"),
        ("last_seen", "2021-13-01T12:30:00Z", "INVALID_DATETIME"),
        ("last_seen", "yesterday", "INVALID_DATETIME"),
        ("orders", "1,000", "INVALID_LONG"),
        ("orders", "1.2.3", "INVALID_LONG"),
        ("orders", "1 000", "INVALID_LONG"),
        ("orders", "12abc", "INVALID_LONG"),
        ("orders", "17\n", "INVALID_LONG"),
        ("orders", "\u0661\u0662", "INVALID_LONG"),  # Arabic-Indic digits
        ("signup_day", "2021-03-01\n", "INVALID_DATE"),
        ("is_vip", "True", "INVALID_BOOLEAN"),
        ("is_vip", "yes", "INVALID_BOOLEAN"),
        ("is_vip", "1", "INVALID_BOOLEAN"),
        ("lifecyclestage", "Lead", "INVALID_OPTION"),  # the label, not the value
        ("lifecyclestage", "lead;customer", "INVALID_OPTION"),  # radio: one value only
    ],
)
def test_invalid_values_fail_the_batch(typed, client, name, value, code):
    problem = value_error(client, name, value)
    assert problem is not None
    assert (problem["name"], problem["error"], problem["isValid"]) == (name, code, False)
    assert value in problem["message"]
    assert typed.contacts_snapshot() == {}


def test_value_messages_copy_hubspots_wording(typed, client):
    assert value_error(client, "signup_day", "1579179660000")["message"] == (
        "1579179660000 is at 13:1:0.0 UTC, not midnight!"
    )
    assert value_error(client, "signup_day", "1579179690500")["message"] == (
        "1579179690500 is at 13:1:30.5 UTC, not midnight!"
    )
    assert value_error(client, "orders", "1/1/1")["message"] == "1/1/1 was not a valid long."

    typed.define_property("tier", "enumeration", "radio", options=[("a", "Alpha"), ("b", "Beta")])
    assert value_error(client, "tier", "Alpha")["message"] == (
        "Alpha was not one of the allowed options: ["
        'label: "Alpha"\nvalue: "a"\ndisplay_order: 0\nhidden: false\nread_only: false\n, '
        'label: "Beta"\nvalue: "b"\ndisplay_order: 1\nhidden: false\nread_only: false\n]'
    )
    assert value_error(client, "tier", "b") is None


def test_checkbox_takes_several_option_values(hs, client):
    hs.define_property("flavours", "enumeration", "checkbox", options=["chocolate", "strawberry", "vanilla"])
    assert value_error(client, "flavours", "chocolate;strawberry") is None
    assert hs.contact_by_email("v@example.com")["properties"]["flavours"] == "chocolate;strawberry"
    problem = value_error(client, "flavours", "chocolate;mint")
    assert problem["error"] == "INVALID_OPTION"
    assert problem["message"].startswith("mint was not one of the allowed options: [")
    assert value_error(client, "flavours", ";vanilla")["error"] == "INVALID_OPTION"
    assert value_error(client, "flavours", "Chocolate")["error"] == "INVALID_OPTION"


def test_external_options_accept_anything(hs, client):
    hs.define_property("deal_stage", "enumeration", external_options=True)
    hs.define_property("closed_stage", "enumeration")
    assert value_error(client, "deal_stage", "appointmentscheduled") is None
    assert value_error(client, "closed_stage", "appointmentscheduled")["error"] == "INVALID_OPTION"


@pytest.mark.parametrize("value", ["42", ""])
def test_read_only_and_calculated_properties_are_refused(hs, client, value):
    hs.define_property("score", "number", calculated=True)
    hs.define_property("locked_note", "string", read_only=True)
    for name in ("score", "locked_note", "hs_additional_emails", "hs_merged_object_ids", "createdate"):
        problem = value_error(client, name, value)
        assert problem is not None, name
        assert problem["error"] == "READ_ONLY_VALUE"
        assert problem["message"] == f'"{name}" is a calculated property; its value cannot be set'
    assert value_error(client, "no_such_thing", "")["error"] == "PROPERTY_DOESNT_EXIST"
    assert hs.contacts_snapshot() == {}


def test_empty_string_clears_any_type(typed, client):
    typed.define_property("tier", "enumeration", options=["a"])
    values = {
        "signup_day": "2021-03-01",
        "last_seen": "2021-03-01T00:00:00Z",
        "orders": "5",
        "is_vip": "true",
        "tier": "a",
    }
    upsert(client, ("v@example.com", values))
    upsert(client, ("v@example.com", {name: "" for name in values}))
    stored = typed.contact_by_email("v@example.com")["properties"]
    assert {name: stored[name] for name in values} == {name: "" for name in values}


def test_one_error_item_per_problem_per_input_and_nothing_written(typed, client):
    with pytest.raises(ApiException) as caught:
        upsert(
            client,
            ("a@example.com", {"orders": "1,5", "is_vip": "no"}),
            ("b@example.com", {"orders": "x", "firstname": "fine"}),
            ("c@example.com", {"orders": "3"}),
        )
    body = error_body(caught.value)
    problems = embedded_problems(body["message"])
    assert [(p["name"], p["error"]) for p in problems] == [
        ("orders", "INVALID_LONG"),
        ("is_vip", "INVALID_BOOLEAN"),
        ("orders", "INVALID_LONG"),
    ]
    assert [(e["code"], e["context"]) for e in body["errors"]] == [
        ("INVALID_LONG", {"propertyName": ["orders"]}),
        ("INVALID_BOOLEAN", {"propertyName": ["is_vip"]}),
        ("INVALID_LONG", {"propertyName": ["orders"]}),
    ]
    assert [e["message"] for e in body["errors"]] == [p["message"] for p in problems]
    assert typed.contacts_snapshot() == {}


def test_create_validates_values_too(typed, client):
    with pytest.raises(ApiException) as caught:
        create(client, ({"email": "a@example.com", "orders": "1,5"}, None))
    assert caught.value.status == 400
    (problem,) = embedded_problems(error_body(caught.value)["message"])
    assert problem["error"] == "INVALID_LONG"
    assert typed.contacts_snapshot() == {}


# ---------------------------------------------------------------------- result shape and order


def test_results_are_shuffled_complete_and_carry_only_sent_properties(hs, client):
    emails = [f"s{i:02d}@example.com" for i in range(40)]
    upsert(client, *[(email, {"firstname": "F", "city": "Oslo"}) for email in emails[:20]])
    response = upsert(client, *[(email, {"lastname": "L"}) for email in emails])

    got = [result.properties["email"] for result in response.results]
    assert sorted(got) == emails  # every input answered once
    assert got != emails  # but not in input order
    new = {result.properties["email"]: result.new for result in response.results}
    assert new == {email: i >= 20 for i, email in enumerate(emails)}
    for result in response.results:
        assert set(result.properties) == {"email", "hs_object_id", "createdate", "lastmodifieddate", "lastname"}
        assert result.properties["hs_object_id"] == result.id
    assert hs.contact_by_email("s00@example.com")["properties"]["city"] == "Oslo"  # still stored

    data, status, _ = create(client, *[({"email": f"n{i}@example.com", "company": "C"}, None) for i in range(30)])
    assert status == 201
    got = [result.properties["email"] for result in data.results]
    assert sorted(got) == sorted(f"n{i}@example.com" for i in range(30)) and got != sorted(got)
    assert set(data.results[0].properties) == {"email", "hs_object_id", "createdate", "lastmodifieddate", "company"}


# ---------------------------------------------------------------------- 207 from upsert


def test_upsert_207_is_deserialised_by_the_real_client(hs, client):
    hs.upsert_errors["bad@example.com"] = ("VALIDATION_ERROR", "Something about this contact")
    data, status, _ = upsert_with_info(
        client,
        ("ok1@example.com", {"firstname": "A"}),
        ("Bad@Example.com", {"firstname": "B"}),
        ("ok2@example.com", {"firstname": "C"}),
    )
    assert status == 207
    assert type(data).__name__ == "BatchResponseSimplePublicUpsertObjectWithErrors"
    assert data.status == "COMPLETE"
    assert data.num_errors == 1
    (error,) = data.errors
    assert error.category == "VALIDATION_ERROR"
    assert error.message == "Something about this contact"
    assert error.context == {"ids": ["Bad@Example.com"]}
    assert error.status == "error"
    assert sorted(r.properties["email"] for r in data.results) == ["ok1@example.com", "ok2@example.com"]
    assert all(r.new for r in data.results)
    assert set(hs.contacts_snapshot()) == {"ok1@example.com", "ok2@example.com"}

    hs.upsert_errors.clear()
    data, status, _ = upsert_with_info(client, ("bad@example.com", {"firstname": "B"}))
    assert status == 200 and data.results[0].new is True


# ---------------------------------------------------------------------- secondary emails, merges


def test_upsert_by_secondary_email_updates_the_owner(hs, client):
    (ann,) = upsert(client, ("ann@example.com", {"firstname": "Ann"})).results
    hs.add_secondary_email("ann@example.com", "Ann.Work@example.com")
    hs.add_secondary_email("ann@example.com", "ann.old@example.com")
    stored = hs.contact_by_email("ann.work@example.com")
    assert stored["id"] == ann.id
    assert stored["properties"]["hs_additional_emails"] == "ann.work@example.com;ann.old@example.com"

    (result,) = upsert(
        client, ("ann.work@example.com", {"email": "ann.work@example.com", "firstname": "Annie"})
    ).results
    assert result.id == ann.id
    assert result.new is False
    assert result.properties["email"] == "ann@example.com"

    assert list(hs.contacts_snapshot()) == ["ann@example.com"]
    assert hs.created_count() == 1
    assert hs.write_counts() == {"ann@example.com": {"created": 1, "updated": 1}}
    owner = hs.contact_by_email("ann@example.com")
    assert owner["properties"]["firstname"] == "Annie"
    assert owner["properties"]["email"] == "ann@example.com"
    assert hs.contact_by_email("nobody@example.com") is None


def test_upsert_by_merged_away_email_updates_the_surviving_contact(hs, client):
    results = upsert(client, ("a@example.com", {"firstname": "A"}), ("b@example.com", {"firstname": "B"})).results
    ids = {r.properties["email"]: r.id for r in results}
    hs.add_secondary_email("b@example.com", "b2@example.com")
    hs.merge_contacts("a@example.com", "b@example.com")

    assert set(hs.contacts_snapshot()) == {"a@example.com"}
    survivor = hs.contact_by_email("b@example.com")
    assert survivor["id"] == ids["a@example.com"]
    assert survivor["properties"]["hs_additional_emails"] == "b@example.com;b2@example.com"
    assert survivor["properties"]["hs_merged_object_ids"] == ids["b@example.com"]
    assert hs.contact_by_id(ids["b@example.com"])["id"] == ids["a@example.com"]

    for email in ("b@example.com", "b2@example.com"):
        (result,) = upsert(client, (email, {"lastname": email})).results
        assert (result.id, result.new, result.properties["email"]) == (ids["a@example.com"], False, "a@example.com")
    assert hs.created_count() == 2  # a and b once each, nothing since
    assert hs.created_count("b@example.com") == 1
    assert set(hs.contacts_snapshot()) == {"a@example.com"}
    assert hs.contact_by_email("a@example.com")["properties"]["lastname"] == "b2@example.com"


def test_secondary_emails_conflict_and_count_as_duplicates(hs, client):
    (ann,) = upsert(client, ("ann@example.com", {})).results
    hs.add_secondary_email("ann@example.com", "ann.work@example.com")

    with pytest.raises(ApiException) as caught:
        create(client, ({"email": "ann.work@example.com"}, None))
    assert caught.value.status == 409
    body = error_body(caught.value)
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {ann.id}"
    data, status, _ = create(client, ({"email": "ANN.work@example.com"}, "t1"))
    assert status == 207 and data.errors[0].category == "CONFLICT"

    with pytest.raises(ApiException) as caught:  # two ids naming one contact
        upsert(client, ("ann@example.com", {}), ("ann.work@example.com", {}))
    assert caught.value.status == 400
    assert "Duplicate IDs" in error_body(caught.value)["message"]
    assert hs.created_count() == 1

    with pytest.raises(ValueError):
        hs.add_secondary_email("ann@example.com", "ann.work@example.com")
    with pytest.raises(KeyError):
        hs.add_secondary_email("nobody@example.com", "x@example.com")


# ---------------------------------------------------------------------- HTML pages from the edge


@pytest.mark.parametrize("status, title", [(502, "502 Bad Gateway"), (504, "504 Gateway Timeout")])
def test_html_error_pages_have_no_hubspot_headers(hs, client, status, title):
    hs.fail_next(status, html=True)
    with pytest.raises(ApiException) as caught:
        upsert(client, ("a@example.com", {}))
    assert isinstance(caught.value, ServiceException)
    assert caught.value.status == status
    headers = caught.value.headers
    assert headers["Content-Type"] == "text/html"
    assert not any(name.lower().startswith("x-hubspot") for name in headers)
    body = caught.value.body  # the client decodes it to str
    assert body.startswith(f"<html>\r\n<head><title>{title}</title></head>")
    assert "cloudflare" in body
    with pytest.raises(ValueError):
        json.loads(body)
    assert hs.contacts_snapshot() == {}
    assert hs.count_status(status) == 1

    hs.fail_next(status)  # the JSON kind still carries HubSpot's headers
    with pytest.raises(ServiceException) as caught:
        upsert(client, ("a@example.com", {}))
    assert caught.value.headers["Content-Type"].startswith("application/json")
    assert all(name in caught.value.headers for name in RATE_HEADERS)
    assert "X-HubSpot-Correlation-Id" in caught.value.headers
    assert upsert(client, ("a@example.com", {})).results[0].new is True


# ---------------------------------------------------------------------- batch read, update, archive


def read_by_email(client: HubSpot, *emails: str, properties=("email",)):
    body = BatchReadInputSimplePublicObjectId(
        id_property="email",
        inputs=[SimplePublicObjectId(id=email) for email in emails],
        properties=list(properties),
        properties_with_history=[],
    )
    return client.crm.contacts.batch_api.read_with_http_info(body, _request_timeout=5)


def update_by_id(client: HubSpot, *inputs: tuple[str, dict]):
    body = BatchInputSimplePublicObjectBatchInput(
        inputs=[SimplePublicObjectBatchInput(id=contact_id, properties=properties) for contact_id, properties in inputs]
    )
    return client.crm.contacts.batch_api.update_with_http_info(body, _request_timeout=5)


def archive_ids(client: HubSpot, *ids: str):
    body = BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=contact_id) for contact_id in ids])
    return client.crm.contacts.batch_api.archive_with_http_info(body, _request_timeout=5)


def ids_of(hs: HubSpotServer) -> dict[str, str]:
    return {email: record["id"] for email, record in hs.contacts_snapshot().items()}


def test_read_by_email_finds_primary_and_secondary_emails_and_207_names_the_rest(hs, client):
    upsert(client, ("ann@example.com", {"firstname": "Ann"}), ("bob@example.com", {"firstname": "Bob"}))
    hs.add_secondary_email("bob@example.com", "robert@example.com")
    data, status, _ = read_by_email(client, "ann@example.com", "robert@example.com", properties=("email", "firstname"))
    assert status == 200
    found = {result.properties["email"]: result for result in data.results}
    assert set(found) == {"ann@example.com", "bob@example.com"}  # a secondary answers under the primary
    assert found["ann@example.com"].properties["firstname"] == "Ann"
    assert {"hs_object_id", "createdate", "lastmodifieddate"} <= set(found["ann@example.com"].properties)

    data, status, _ = read_by_email(client, "ann@example.com", "nobody@example.com", "none@example.com")
    assert status == 207
    assert [result.properties["email"] for result in data.results] == ["ann@example.com"]
    [error] = data.errors
    assert error.category == "OBJECT_NOT_FOUND"
    assert error.context == {"ids": ["nobody@example.com", "none@example.com"]}
    assert hs.write_counts() == {
        "ann@example.com": {"created": 1, "updated": 0},
        "bob@example.com": {"created": 1, "updated": 0},
    }  # reads write nothing


def test_update_by_id_writes_and_an_unknown_id_fails_the_whole_batch(hs, client):
    upsert(client, ("ann@example.com", {}), ("bob@example.com", {}))
    ids = ids_of(hs)
    data, status, _ = update_by_id(client, (ids["ann@example.com"], {"firstname": "Ann"}))
    assert status == 200
    [result] = data.results
    assert result.id == ids["ann@example.com"] and result.properties["firstname"] == "Ann"

    with pytest.raises(ApiException) as caught:
        update_by_id(client, (ids["bob@example.com"], {"firstname": "Bob"}), ("999", {"firstname": "X"}))
    assert caught.value.status == 404
    body = error_body(caught.value)
    assert body["category"] == "OBJECT_NOT_FOUND" and body["context"] == {"ids": ["999"]}
    assert "firstname" not in hs.contact_by_email("bob@example.com")["properties"]  # nothing written
    assert hs.write_counts()["ann@example.com"] == {"created": 1, "updated": 1}


def test_update_refuses_bad_values_and_a_merged_away_id(hs, client):
    upsert(client, ("ann@example.com", {}), ("bob@example.com", {}))
    ids = ids_of(hs)
    with pytest.raises(ApiException) as caught:
        update_by_id(client, (ids["ann@example.com"], {"nope": "x"}))
    assert caught.value.status == 400 and error_body(caught.value)["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    hs.merge_contacts("ann@example.com", "bob@example.com")
    with pytest.raises(ApiException) as caught:
        update_by_id(client, (ids["bob@example.com"], {"firstname": "Bob"}))
    assert caught.value.status == 404  # merged ids are not followed (unverified, stricter)


def test_archive_is_204_frees_the_email_and_unknown_ids_fail_the_batch(hs, client):
    upsert(client, ("ann@example.com", {}), ("bob@example.com", {}))
    hs.add_secondary_email("bob@example.com", "robert@example.com")
    ids = ids_of(hs)
    data, status, _ = archive_ids(client, ids["bob@example.com"])
    assert (data, status) == (None, 204)
    assert set(hs.contacts_snapshot()) == {"ann@example.com"}
    assert hs.archived_contacts[ids["bob@example.com"]]["archived"] is True
    assert hs.contact_by_email("robert@example.com") is None  # its secondary email went with it

    with pytest.raises(ApiException) as caught:
        archive_ids(client, ids["ann@example.com"], ids["bob@example.com"])  # archived already
    assert caught.value.status == 404 and error_body(caught.value)["context"] == {"ids": [ids["bob@example.com"]]}
    assert "ann@example.com" in hs.contacts_snapshot()  # the whole batch refused

    (created,) = upsert(client, ("bob@example.com", {})).results
    assert created.new is True and created.id != ids["bob@example.com"]  # a new contact (unverified)


# Each new batch endpoint called with these ids (emails for read).
BATCH_CALLS = {
    "read": lambda client, ids: read_by_email(client, *ids),
    "update": lambda client, ids: update_by_id(client, *[(i, {}) for i in ids]),
    "archive": lambda client, ids: archive_ids(client, *ids),
}


@pytest.mark.parametrize("endpoint", sorted(BATCH_CALLS))
def test_every_new_batch_endpoint_takes_at_most_100_distinct_ids(hs, client, endpoint):
    upsert(client, ("dup@example.com", {}))
    known = "dup@example.com" if endpoint == "read" else ids_of(hs)["dup@example.com"]
    for ids, message in (
        ([str(i) for i in range(101)], "The maximum number of inputs supported in a batch is 100."),
        ([known, known], "Duplicate IDs found in batch input"),
    ):
        with pytest.raises(ApiException) as caught:
            BATCH_CALLS[endpoint](client, ids)
        assert caught.value.status == 400
        body = error_body(caught.value)
        assert body["category"] == "VALIDATION_ERROR" and body["message"].startswith(message)
    assert set(hs.contacts_snapshot()) == {"dup@example.com"}


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        ("read", "crm.objects.contacts.read"),
        ("update", "crm.objects.contacts.write"),
        ("archive", "crm.objects.contacts.write"),
    ],
)
def test_new_endpoints_need_their_scope_and_count_against_the_rolling_window(endpoint, scope):
    probe = ["a@example.com"] if endpoint == "read" else ["1"]
    with HubSpotServer(rate_limit=2, interval_ms=60_000) as server:
        client = make_client(server)
        server.scopes = {"crm.objects.contacts.write", "crm.objects.contacts.read"} - {scope}
        with pytest.raises(ApiException) as caught:
            BATCH_CALLS[endpoint](client, probe)
        assert caught.value.status == 403
        assert error_body(caught.value)["errors"][0]["context"]["requiredGranularScopes"] == [scope]
        server.scopes = None
        for _ in range(2):  # the 403 counted nothing: these two fill the window (207 read, 404 unknown id)
            try:
                BATCH_CALLS[endpoint](client, probe)
            except ApiException as exc:
                assert exc.status == 404
        with pytest.raises(ApiException) as caught:
            BATCH_CALLS[endpoint](client, probe)
        assert caught.value.status == 429
