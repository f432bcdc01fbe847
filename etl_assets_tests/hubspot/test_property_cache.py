"""The stored listing of an account's properties: when the sync may reuse it, and its round trip
through MariaDB (the sync's use of it, end to end: assets/test_hubspot_property_cache.py)."""

import datetime as dt

import pytest
import sqlalchemy as sa

from etl_assets.contacts.mapping import load_column_map, parse_column_map
from etl_assets.errors import PermanentError
from etl_assets.hubspot import property_cache
from etl_assets.hubspot.properties import PropertyDefinition, declared
from etl_assets.hubspot.property_cache import Listing, why_not_reuse

COLUMN_MAP = load_column_map(None)
AT = dt.datetime(2026, 12, 1, 5, 0, 0)
# The default map's properties as the account defines them, every one usable.
DEFINITIONS = {spec.hubspot or "": declared(spec) for spec in COLUMN_MAP.hubspot_fields}


def listing(age_s: int, **changed: PropertyDefinition | None) -> Listing:
    definitions = {**DEFINITIONS, **changed}
    return Listing(
        {name: definition for name, definition in definitions.items() if definition is not None},
        AT - dt.timedelta(seconds=age_s),
    )


@pytest.mark.fast
def test_a_recent_listing_showing_every_mapped_property_usable_is_reused():
    assert why_not_reuse(listing(0), COLUMN_MAP, 3600, AT) is None
    assert why_not_reuse(listing(3600), COLUMN_MAP, 3600, AT) is None


@pytest.mark.fast
def test_a_listing_older_than_the_limit_or_a_limit_of_0_or_none_stored_is_not_reused():
    assert why_not_reuse(listing(3601), COLUMN_MAP, 3600, AT) == "the stored listing is 3601 s old, more than 3600 s"
    assert why_not_reuse(listing(0), COLUMN_MAP, 0, AT) == "HUBSPOT_PROPERTIES_MAX_AGE_SECONDS=0"
    assert why_not_reuse(None, COLUMN_MAP, 3600, AT) == "no stored listing for this account"


@pytest.mark.fast
def test_a_listing_lacking_a_mapped_property_is_not_reused_even_when_the_sync_would_create_it():
    reason = why_not_reuse(listing(10, source_customer_id=None), COLUMN_MAP, 3600, AT)
    assert reason is not None and "'source_customer_id' (field 'customer_id') does not exist" in reason


@pytest.mark.fast
@pytest.mark.parametrize(
    "definition",
    [
        PropertyDefinition("subscription_date", "number", "number"),  # another type than the map declares
        PropertyDefinition("subscription_date", "date", "date", read_only=True),
    ],
)
def test_a_listing_showing_an_incompatible_definition_is_not_reused(definition):
    reason = why_not_reuse(listing(10, subscription_date=definition), COLUMN_MAP, 3600, AT)
    assert reason is not None and reason.startswith(
        "the stored listing shows a problem: HubSpot property 'subscription"
    )


@pytest.mark.fast
def test_a_listing_of_a_dropdown_whose_options_the_sync_checks_is_not_reused():
    dropdown = PropertyDefinition("lifecyclestage", "enumeration", "select", options=(("lead", "Lead"),))
    column_map = parse_column_map(
        {
            "fields": [
                {"source": "Email", "field": "email", "hubspot": "email"},
                {"source": "Stage", "field": "stage", "hubspot": "lifecyclestage"},
            ]
        },
        "test map",
    )
    fresh = Listing({"email": PropertyDefinition("email", "string"), "lifecyclestage": dropdown}, AT)
    assert why_not_reuse(fresh, column_map, 3600, AT) == (
        "property 'lifecyclestage' is a dropdown: its options are listed every run"
    )
    owners = PropertyDefinition("lifecyclestage", "enumeration", "select", external_options=True)
    fresh = Listing({"email": fresh.definitions["email"], "lifecyclestage": owners}, AT)
    assert why_not_reuse(fresh, column_map, 3600, AT) is None  # options kept elsewhere: not checked here
    unmapped = Listing({**DEFINITIONS, "lifecyclestage": dropdown}, AT)
    assert why_not_reuse(unmapped, COLUMN_MAP, 3600, AT) is None  # a dropdown the map does not name


@pytest.mark.fast
@pytest.mark.parametrize(
    ("value", "error"), [("soon", "must be a whole number, got 'soon'"), ("-1", "must be 0 or more seconds, got -1")]
)
def test_a_bad_max_age_names_the_setting(monkeypatch, value, error):
    monkeypatch.setenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS", value)
    with pytest.raises(PermanentError, match=f"HUBSPOT_PROPERTIES_MAX_AGE_SECONDS {error}"):
        property_cache.max_age_seconds()


@pytest.mark.fast
def test_the_max_age_defaults_to_15_minutes(monkeypatch):
    monkeypatch.delenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS", raising=False)
    assert property_cache.max_age_seconds() == 900


def test_a_stored_listing_keeps_every_field_of_the_mapped_definitions_per_account(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    property_cache.ensure_table(engine)
    country = PropertyDefinition(
        "country", "enumeration", "select", options=(("jp", "Japan"), ("de", "Germany")), external_options=False
    )
    created = PropertyDefinition("createdate", "datetime", "date", read_only=True, calculated=True)
    property_cache.store(
        engine, "account-a", COLUMN_MAP, {**DEFINITIONS, "country": country, "createdate": created}, AT
    )
    stored = property_cache.stored(engine, "account-a")
    assert stored == Listing({**DEFINITIONS, "country": country}, AT)  # createdate is not mapped: not kept
    assert property_cache.stored(engine, "account-b") is None

    later = AT + dt.timedelta(minutes=5)
    property_cache.store(engine, "account-a", COLUMN_MAP, DEFINITIONS, later)  # replaces the account's listing
    assert property_cache.stored(engine, "account-a") == Listing(DEFINITIONS, later)
    property_cache.forget(engine, "account-a")
    assert property_cache.stored(engine, "account-a") is None
