"""HubSpot accounts whose properties have their own types, end to end: the embedded sample (988
contacts), MariaDB, the local HubSpot server validating values per type as HubSpot does."""

from importlib import resources

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from etl_assets_tests.assets.test_assets import count, failure_message, materialization, run_daily_etl
from etl_assets_tests.hubspot.test_sync import api_for

SYNC_ONLY = [dg.AssetKey("hubspot_contacts")]
LOAD_ONLY = [dg.AssetKey("kaggle_dataset"), dg.AssetKey("contacts_table")]
COUNTRIES = [
    ("ca", "Canada"),
    ("jp", "Japan"),
    ("de", "Germany"),
    ("us", "United States"),
    ("fr", "France"),
    ("pt", "Portugal"),
]  # not Kenya or Ecuador, the sample's other two


def write_map(tmp_path, monkeypatch, **changes: dict) -> None:
    """ETL_COLUMN_MAP: the default map with some fields' entries changed."""
    document = yaml.safe_load(resources.files("etl_assets.data").joinpath("default_column_map.yaml").read_text())
    for spec in document["fields"]:
        spec.update(changes.get(spec["field"], {}))
        for key in [key for key, value in spec.items() if value is None]:
            del spec[key]
    path = tmp_path / "column_map.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("ETL_COLUMN_MAP", str(path))


@pytest.mark.parametrize(("type_", "options"), [("number", None), ("enumeration", [("2020", "2020")])])
def test_a_property_of_another_type_stops_the_sync_before_any_contact_is_sent(hubspot_env, mariadb_url, type_, options):
    hubspot_env.define_property("subscription_date", type_, options=options)
    assert run_daily_etl(asset_selection=LOAD_ONLY).success
    hubspot_env.reset_log()
    result = run_daily_etl(asset_selection=SYNC_ONLY)  # forced: the sync alone, whatever preflight says
    assert not result.success
    assert (
        f"HubSpot property 'subscription_date' (field 'subscription_date') has type {type_}; the column map "
        "declares date"
    ) in failure_message(result)
    assert hubspot_env.count_requests() == 1  # the property list; halving used to spend ~2,000 upserts
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_sync_state") == 0


def test_values_are_converted_to_each_propertys_type(hubspot_env, mariadb_url, tmp_path, monkeypatch):
    # A datetime property for the dates (the map declares no type: the account's decides), and an
    # enumeration of country codes whose labels are the sample's country names.
    write_map(tmp_path, monkeypatch, subscription_date={"hubspot_type": None}, country={"hubspot": "country_code"})
    hubspot_env.define_property("subscription_date", "datetime")
    hubspot_env.define_property("country_code", "enumeration", options=COUNTRIES)
    synced = materialization(run_daily_etl(), "hubspot_contacts")
    stored = hubspot_env.contacts_snapshot()
    with sa.create_engine(mariadb_url).connect() as conn:
        contacts = {
            row.email: row for row in conn.execute(sa.text("SELECT email, country, subscription_date FROM contacts"))
        }
        refused = dict(
            conn.execute(
                sa.text("SELECT error_category, COUNT(*) FROM hubspot_sync_state WHERE status = 'failed' GROUP BY 1")
            ).all()
        )
    kept_out = {email for email, row in contacts.items() if row.country in ("Kenya", "Ecuador")}
    assert len(kept_out) == 222 and refused == {"INVALID_OPTION": 222}
    assert synced["failed"] == 222 and synced["created"] == 988 - 222
    assert set(stored) == set(contacts) - kept_out
    assert synced["split_batches"] == 0  # refused before sending: no batch failed, none was halved
    codes = dict((label, value) for value, label in COUNTRIES)
    for email, record in stored.items():
        assert record["properties"]["country_code"] == codes[contacts[email].country]
        assert record["properties"]["subscription_date"] == f"{contacts[email].subscription_date}T00:00:00.000Z"


def test_a_merged_contact_and_a_secondary_email_are_recorded_with_hubspots_ids(hubspot_env, mariadb_url):
    assert run_daily_etl(asset_selection=LOAD_ONLY).success
    with sa.create_engine(mariadb_url).connect() as conn:
        first, second, third = conn.execute(sa.text("SELECT email FROM contacts ORDER BY email LIMIT 3")).scalars()
    # Someone in HubSpot already has `first` as a secondary address.
    api_for(hubspot_env).upsert_contacts([{"id": "owner@example.com", "properties": {"firstname": "Owner"}}])
    hubspot_env.add_secondary_email("owner@example.com", first)
    owner = hubspot_env.contact_by_email("owner@example.com")["id"]
    synced = materialization(run_daily_etl(asset_selection=SYNC_ONLY), "hubspot_contacts")
    assert (synced["created"], synced["updated"], synced["secondary_email"]) == (987, 1, 1)
    assert hubspot_env.created_count() == 1 + 987

    # Then `third` is merged into `second` in HubSpot, and `third` changes at the source.
    hubspot_env.merge_contacts(second, third)
    survivor = hubspot_env.contact_by_email(second)["id"]
    with sa.create_engine(mariadb_url).begin() as conn:
        conn.execute(
            sa.text("UPDATE contacts SET first_name = 'Changed', content_hash = REPEAT('f', 32) WHERE email = :email"),
            {"email": third},
        )
    synced = materialization(run_daily_etl(asset_selection=SYNC_ONLY), "hubspot_contacts")
    assert (synced["updated"], synced["merged"], synced["failed"]) == (1, 1, 0)
    with sa.create_engine(mariadb_url).connect() as conn:
        rows = {
            row.email: row
            for row in conn.execute(
                sa.text(
                    "SELECT email, hubspot_id, last_outcome, status FROM hubspot_sync_state WHERE email IN (:a, :c)"
                ),
                {"a": first, "c": third},
            )
        }
    assert (rows[first].hubspot_id, rows[first].last_outcome, rows[first].status) == (
        owner,
        "secondary_email",
        "synced",
    )
    assert (rows[third].hubspot_id, rows[third].last_outcome, rows[third].status) == (survivor, "merged", "synced")
    assert hubspot_env.created_count() == 1 + 987  # nobody created twice
