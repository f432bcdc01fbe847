"""Bounded isolation, end to end: the embedded sample (988 contacts), MariaDB, the local HubSpot server.

A property HubSpot refuses for every contact stops the run before any contact is sent (halving
used to spend ~199 requests per batch and mark every contact failed); contacts HubSpot refuses
one by one are still isolated, within the per-run cap.
"""

from importlib import resources

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from hubspot import HubSpot
from hubspot.crm.properties import OptionInput, PropertyCreate

from etl_assets.hubspot import state, sync
from etl_assets_tests.assets.test_assets import (
    WITHOUT_PREFLIGHT,
    count,
    failure_message,
    materialization,
    run_daily_etl,
)

UPSERTS = "/batch/upsert"
FAILED = "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'failed'"
SYNC_ONLY = [dg.AssetKey("hubspot_contacts")]


def map_field(tmp_path, monkeypatch, field: str, hubspot: str) -> None:
    """ETL_COLUMN_MAP: the default map, with `field` sent to the HubSpot property `hubspot`."""
    document = yaml.safe_load(resources.files("etl_assets.data").joinpath("default_column_map.yaml").read_text())
    for spec in document["fields"]:
        if spec["field"] == field:
            spec["hubspot"] = hubspot
    path = tmp_path / "column_map.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("ETL_COLUMN_MAP", str(path))


def load_then_spoil(mariadb_url: str, where: str) -> set[str]:
    """Load the sample, then give the contacts `where` picks an address only HubSpot refuses."""
    assert run_daily_etl(asset_selection=[dg.AssetKey("kaggle_dataset"), dg.AssetKey("contacts_table")]).success
    with sa.create_engine(mariadb_url).begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE contacts SET email = CONCAT(SUBSTRING_INDEX(email, '@', 1), '@mail.invalid') WHERE {where}"
            )
        )
        return set(conn.execute(sa.text("SELECT email FROM contacts WHERE email LIKE '%@mail.invalid'")).scalars())


@pytest.mark.parametrize(
    ("field", "hubspot", "options", "message"),
    [
        # HubSpot sets it, nobody else: seen in the property's definition before any contact is sent
        (
            "subscription_date",
            "createdate",
            None,
            "HubSpot property 'createdate' (field 'subscription_date') is read-only",
        ),
        # an enumeration no contact's city is in: seen converting the first page
        (
            "city",
            "home_city",
            ["Atlantis"],
            "HubSpot property 'home_city' takes none of the 988 values it was given (INVALID_OPTION)",
        ),
    ],
)
def test_a_property_refused_for_every_contact_stops_the_run_at_once(
    hubspot_env, mariadb_url, tmp_path, monkeypatch, field, hubspot, options, message
):
    map_field(tmp_path, monkeypatch, field, hubspot)
    if options:
        HubSpot(access_token=hubspot_env.token, host=hubspot_env.url).crm.properties.core_api.create(
            "contacts",
            property_create=PropertyCreate(
                name=hubspot,
                label=hubspot,
                type="enumeration",
                field_type="select",
                group_name="contactinformation",
                options=[
                    OptionInput(label=value, value=value, display_order=i, hidden=False)
                    for i, value in enumerate(options)
                ],
            ),
        )
    result = run_daily_etl(asset_selection=WITHOUT_PREFLIGHT)  # forced past the preflight, which names it too
    assert not result.success
    assert message in failure_message(result)
    assert hubspot_env.count_requests(UPSERTS) == 0  # halving used to spend ~1,990
    assert not hubspot_env.contacts_snapshot()
    assert count(mariadb_url, FAILED) == 0  # all 988 stay pending


def test_contacts_refused_one_by_one_are_still_isolated(hubspot_env, mariadb_url):
    bad = load_then_spoil(mariadb_url, "id IN (17, 160, 161)")
    synced = materialization(run_daily_etl(asset_selection=SYNC_ONLY), "hubspot_contacts")
    assert (synced["created"], synced["failed"], synced["pending"]) == (985, 3, 0)
    assert 0 < synced["isolation_requests"] <= 3 * 14  # 7 halvings of 100 per bad contact at most
    assert hubspot_env.count_requests(UPSERTS) == synced["batches"] + synced["isolation_requests"]
    assert "isolation_stopped" not in synced
    assert not bad & set(hubspot_env.contacts_snapshot())
    assert count(mariadb_url, f"{FAILED} AND error_message LIKE '%INVALID_EMAIL%'") == 3


def test_past_the_isolation_cap_refused_batches_stay_pending(hubspot_env, mariadb_url, monkeypatch):
    monkeypatch.setattr(sync, "MAX_ISOLATION_REQUESTS", 4)
    bad = load_then_spoil(mariadb_url, "id % 100 = 7")  # 10, spread over the batches
    synced = materialization(run_daily_etl(asset_selection=SYNC_ONLY), "hubspot_contacts")
    assert synced["isolation_requests"] == 4
    assert hubspot_env.count_requests(UPSERTS) == synced["batches"] + 4
    assert synced["failed"] == 0 and synced["pending"] >= len(bad)
    assert synced["created"] + synced["pending"] == 988
    assert f"{synced['pending']} contacts of refused batches stay pending" in synced["isolation_stopped"]
    assert count(mariadb_url, FAILED) == 0
    with sa.create_engine(mariadb_url).connect() as conn:
        assert state.count_due(conn) == synced["pending"]  # sent again by the next run
