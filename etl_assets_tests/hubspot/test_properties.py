"""Values converted to the form each HubSpot property type takes, and maps checked against an account."""

import dataclasses
import datetime as dt

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import ApiException, BatchInputSimplePublicObjectBatchInputUpsert

from etl_assets.contacts.mapping import ColumnMap, load_column_map
from etl_assets.hubspot.properties import (
    PropertyDefinition,
    PropertyWriter,
    ValueRefused,
    declared,
    incompatibility,
    mapping_problems,
    to_hubspot,
)
from etl_assets_tests.hubspot.test_sync import api_for
from etl_assets_tests.servers.hubspot_server import HubSpotServer

COLUMN_MAP = load_column_map(None)
TIER = PropertyDefinition("tier", "enumeration", "select", options=(("gold", "Gold Plan"), ("silver", "Silver")))
TAGS = PropertyDefinition("tags", "enumeration", "checkbox", options=(("a", "Alpha"), ("b", "Beta")))
UTC = dt.UTC


def prop(type_: str, **extra) -> PropertyDefinition:
    return PropertyDefinition("p", type_, **extra)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("value", "definition", "expected"),
    [
        (dt.date(2021, 3, 4), prop("date"), "2021-03-04"),
        ("2021-03-04", prop("date"), "2021-03-04"),
        (" 2021-03-04 ", prop("date"), "2021-03-04"),
        ("2021-03-04T00:00:00Z", prop("date"), "2021-03-04"),
        (dt.datetime(2021, 3, 4), prop("date"), "2021-03-04"),
        (dt.date(2021, 3, 4), prop("datetime"), "2021-03-04T00:00:00.000Z"),
        ("2021-03-04 10:20:30", prop("datetime"), "2021-03-04T10:20:30.000Z"),  # no zone: taken as UTC
        ("2021-03-04T10:20:30+02:00", prop("datetime"), "2021-03-04T08:20:30.000Z"),
        (
            dt.datetime(2021, 3, 4, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            prop("datetime"),
            "2021-03-05T04:59:00.000Z",
        ),
        ("17", prop("number"), "17"),
        ("-3.25", prop("number"), "-3.25"),
        ("+8", prop("number"), "8"),
        (42, prop("number"), "42"),
        ("Yes", prop("bool"), "true"),
        ("0", prop("bool"), "false"),
        ("FALSE", prop("bool"), "false"),
        ("gold", TIER, "gold"),
        ("Gold Plan", TIER, "gold"),  # a label becomes its value
        ("SILVER", TIER, "silver"),
        ("Alpha; b", TAGS, "a;b"),
        ("anything at all", prop("enumeration", external_options=True), "anything at all"),
        (dt.date(2021, 3, 4), prop("string"), "2021-03-04"),
        ("as is; with ;", prop("string"), "as is; with ;"),
    ],
)
def test_values_become_what_the_type_takes(value, definition, expected):
    assert to_hubspot(value, definition) == expected


@pytest.mark.fast
@pytest.mark.parametrize(
    ("value", "definition", "code"),
    [
        ("03/04/2021", prop("date"), "INVALID_DATE"),
        ("2021-02-30", prop("date"), "INVALID_DATE"),
        ("2021-03-04T10:00:00Z", prop("date"), "INVALID_DATE"),  # the time would be lost
        (dt.datetime(2021, 3, 4, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), prop("date"), "INVALID_DATE"),
        ("yesterday", prop("datetime"), "INVALID_DATETIME"),
        ("1,234", prop("number"), "INVALID_LONG"),
        ("1.2.3", prop("number"), "INVALID_LONG"),
        ("12 apples", prop("number"), "INVALID_LONG"),
        ("1e5", prop("number"), "INVALID_LONG"),
        ("maybe", prop("bool"), "INVALID_BOOLEAN"),
        ("platinum", TIER, "INVALID_OPTION"),
        ("gold;silver", TIER, "INVALID_OPTION"),  # one value only: not a checkbox
        ("a;zeta", TAGS, "INVALID_OPTION"),
    ],
)
def test_values_the_type_cannot_take_are_refused_with_hubspots_code(value, definition, code):
    with pytest.raises(ValueRefused) as refused:
        to_hubspot(value, definition)
    assert refused.value.code == code


@pytest.mark.fast
def test_a_label_shared_by_two_options_is_refused_not_guessed():
    ambiguous = PropertyDefinition("p", "enumeration", "select", options=(("x1", "Same"), ("x2", "same")))
    with pytest.raises(ValueRefused, match="not one of the options of 'p': x1, x2"):
        to_hubspot("SAME", ambiguous)


def test_every_converted_value_is_accepted_by_the_hubspot_server():
    """The conversions against the local server's per-type validation, through the real client."""
    definitions = {
        "d": prop("date"),
        "t": prop("datetime"),
        "n": prop("number"),
        "b": prop("bool"),
        "tier": TIER,
        "tags": TAGS,
    }
    values = {
        "d": "2021-03-04T00:00:00Z",
        "t": "2021-03-04 10:20:30",
        "n": "+8",
        "b": "Yes",
        "tier": "Gold Plan",
        "tags": "Alpha;Beta",
    }
    with HubSpotServer() as server:
        for name, definition in definitions.items():
            server.define_property(
                name,
                definition.type,
                definition.field_type,
                options=[(value, label) for value, label in definition.options] or None,
            )
        properties = {
            name: to_hubspot(values[name], dataclasses.replace(definition, name=name))
            for name, definition in definitions.items()
        }
        answer = api_for(server).upsert_contacts([{"id": "a@example.com", "properties": properties}])
        stored = server.contacts_snapshot()["a@example.com"]["properties"]
    assert len(answer.results) == 1
    assert {name: stored[name] for name in definitions} == {
        "d": "2021-03-04",
        "t": "2021-03-04T10:20:30.000Z",
        "n": "8",
        "b": "true",
        "tier": "gold",
        "tags": "a;b",
    }


def test_unconverted_values_would_have_failed_the_whole_batch():
    """The same values sent as they are: the server refuses the batch, so conversion is what saves it."""
    with HubSpotServer() as server:
        server.define_property("tier", "enumeration", options=[("gold", "Gold Plan")])
        client = HubSpot(access_token=server.token, host=server.url)
        body = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[{"idProperty": "email", "id": "a@example.com", "properties": {"tier": "Gold Plan"}}]
        )
        with pytest.raises(ApiException) as refused:
            client.crm.contacts.batch_api.upsert(body)
    assert refused.value.status == 400 and "INVALID_OPTION" in refused.value.body


def spec(field: str):
    return COLUMN_MAP.by_field(field)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("field", "definition", "problem"),
    [
        ("subscription_date", PropertyDefinition("subscription_date", "date", "date"), None),
        (
            "subscription_date",
            PropertyDefinition("subscription_date", "datetime", "date"),
            "has type datetime; the column map declares date",
        ),
        (
            "subscription_date",
            PropertyDefinition("subscription_date", "number", "number"),
            "has type number; the column map declares date",
        ),
        ("subscription_date", PropertyDefinition("createdate", "datetime", "date", read_only=True), "is read-only"),
        ("city", PropertyDefinition("city", "enumeration", "select", options=(("x", "X"),)), None),  # values decide
        (
            "city",
            PropertyDefinition("hs_score", "number", "calculation_equation", calculated=True),
            "is calculated by HubSpot",
        ),
    ],
)
def test_incompatibility_names_the_property_and_why(field, definition, problem):
    found = incompatibility(spec(field), definition)
    assert (found is None) if problem is None else (problem in found and repr(definition.name) in found)


@pytest.mark.fast
def test_a_date_field_fits_no_enumeration_even_undeclared():
    undeclared = dataclasses.replace(spec("subscription_date"), hubspot_type=None)
    found = incompatibility(undeclared, PropertyDefinition("subscription_date", "enumeration", "select"))
    assert found == (
        "HubSpot property 'subscription_date' (field 'subscription_date') has type enumeration; the field holds dates"
    )


@pytest.mark.fast
def test_mapping_problems_cover_missing_properties_by_whether_the_sync_may_create_them():
    enumeration = dataclasses.replace(spec("city"), hubspot="region", hubspot_type="enumeration")
    column_map = ColumnMap((spec("email"), spec("subscription_date"), enumeration), origin="test")
    definitions = {"email": PropertyDefinition("email", "string")}
    may_create = mapping_problems(column_map, definitions, may_create=True)
    assert may_create["email"] is None and may_create["subscription_date"] is None
    assert "creates no enumeration property" in may_create["region"]
    may_not = mapping_problems(column_map, definitions, may_create=False)
    assert "does not exist; create it or set HUBSPOT_CREATE_PROPERTIES=true" in may_not["subscription_date"]
    assert declared(spec("subscription_date")) == PropertyDefinition("subscription_date", "date", "date")


@pytest.mark.fast
def test_the_writer_names_the_property_and_tells_a_property_refused_throughout():
    column_map = ColumnMap((spec("email"), dataclasses.replace(spec("city"), hubspot="tier")), origin="test")
    writer = PropertyWriter(column_map, {"tier": dataclasses.replace(TIER, name="tier")})
    with pytest.raises(ValueRefused, match=r"^tier \(enumeration\): 'Berlin' is not one of the options"):
        writer.properties({"email": "a@example.com", "city": "Berlin"})
    for _ in range(18):
        with pytest.raises(ValueRefused):
            writer.properties({"email": "a@example.com", "city": "Paris"})
    assert writer.refused_throughout() is None  # 19 refused: not yet enough to blame the property
    with pytest.raises(ValueRefused):
        writer.properties({"email": "a@example.com", "city": "Rome"})
    assert writer.refused_throughout() == ("tier", "INVALID_OPTION", 20)
    assert writer.properties({"email": "b@example.com", "city": "silver"})["tier"] == "silver"
    assert writer.refused_throughout() is None  # one value fitted: the data, not the property, is at fault
    assert writer.properties({"email": "c@example.com", "city": ""}) == {"email": "c@example.com"}
