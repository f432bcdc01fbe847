"""The sync reusing a stored listing of the account's properties instead of listing again: the
embedded sample (988 contacts), MariaDB, and the local HubSpot server counting property requests."""

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets_tests.assets.test_assets import count, failure_message, materialization, run_daily_etl
from etl_assets_tests.assets.test_hubspot_property_types import COUNTRIES, LOAD_ONLY, SYNC_ONLY, write_map
from etl_assets_tests.conftest import SHORT_RETRIES, run_dagster
from etl_assets_tests.servers.hubspot_server import PROPERTIES_PATH, HubSpotServer

LISTING = f"GET {PROPERTIES_PATH}"
CREATING = f"POST {PROPERTIES_PATH}"


def property_requests(server: HubSpotServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in server.request_log if r.path.startswith("/crm/v3/properties")]


def make_every_contact_due(url: str) -> None:
    """As if every contact had changed since HubSpot accepted it."""
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE hubspot_sync_state SET synced_hash = REPEAT('0', 32)"))


def load_and_sync() -> None:
    assert run_daily_etl(asset_selection=LOAD_ONLY).success
    assert run_daily_etl(asset_selection=SYNC_ONLY).success


@pytest.mark.parametrize("dropdown", [False, True])
def test_a_second_sync_within_the_age_limit_lists_nothing_and_converts_by_the_stored_definitions(
    hubspot_env, mariadb_url, tmp_path, monkeypatch, dropdown
):
    """Unless a mapped property is a dropdown: an option added since the listing would be refused."""
    write_map(tmp_path, monkeypatch, subscription_date={"hubspot_type": None}, country={"hubspot": "country_code"})
    hubspot_env.define_property("subscription_date", "datetime")
    if dropdown:
        hubspot_env.define_property("country_code", "enumeration", options=COUNTRIES)
    else:
        hubspot_env.define_property("country_code", "string")
    load_and_sync()
    assert property_requests(hubspot_env) == [LISTING, CREATING]  # source_customer_id created
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as conn:  # changed at the source: due again
        changed = set(conn.execute(sa.text("SELECT email FROM contacts WHERE country = 'Germany'")).scalars())
        conn.execute(
            sa.text(
                "UPDATE contacts SET subscription_date = '2020-02-29', country = 'Japan', "
                "content_hash = REPEAT('e', 32) WHERE country = 'Germany'"
            )
        )
    hubspot_env.reset_log()

    synced = materialization(run_daily_etl(asset_selection=SYNC_ONLY), "hubspot_contacts")

    assert property_requests(hubspot_env) == ([LISTING] if dropdown else [])
    assert synced["updated"] == len(changed) and synced["failed"] == 0
    stored = hubspot_env.contacts_snapshot()
    for email in changed:
        # a dropdown takes the option's value, not its label
        assert stored[email]["properties"]["country_code"] == ("jp" if dropdown else "Japan")
        assert stored[email]["properties"]["subscription_date"] == "2020-02-29T00:00:00.000Z"


def test_after_the_preflight_lists_the_properties_the_sync_lists_nothing(hubspot_env):
    hubspot_env.define_property("source_customer_id", "string")
    hubspot_env.define_property("subscription_date", "date")
    assert run_daily_etl().success  # preflight_checks first, then the load and the sync
    assert property_requests(hubspot_env) == [LISTING]  # the preflight's
    assert len(hubspot_env.contacts_snapshot()) == 988


@pytest.mark.parametrize("outdated_by", ["age", "HUBSPOT_PROPERTIES_MAX_AGE_SECONDS=0"])
def test_a_listing_older_than_the_limit_or_a_limit_of_0_lists_again(hubspot_env, mariadb_url, monkeypatch, outdated_by):
    load_and_sync()
    if outdated_by == "age":
        with sa.create_engine(mariadb_url).begin() as conn:
            conn.execute(
                sa.text("UPDATE hubspot_property_definitions SET listed_at = listed_at - INTERVAL 3601 SECOND")
            )
    else:
        monkeypatch.setenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS", "0")
    make_every_contact_due(mariadb_url)
    hubspot_env.reset_log()

    assert materialization(run_daily_etl(asset_selection=SYNC_ONLY), "hubspot_contacts")["updated"] == 988
    assert property_requests(hubspot_env) == [LISTING]
    age = "SELECT TIMESTAMPDIFF(SECOND, listed_at, UTC_TIMESTAMP()) FROM hubspot_property_definitions"
    assert count(mariadb_url, age) < 60  # the new listing is stored


def test_a_listing_stored_for_another_token_is_not_used(hubspot_env, mariadb_url, monkeypatch):
    load_and_sync()
    hubspot_env.rotate_token("rotated-token")
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "rotated-token")
    make_every_contact_due(mariadb_url)
    hubspot_env.reset_log()

    assert run_daily_etl(asset_selection=SYNC_ONLY).success
    assert property_requests(hubspot_env) == [LISTING]
    with sa.create_engine(mariadb_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT account_key, definitions FROM hubspot_property_definitions")).all()
    assert len(rows) == 2  # one per account key
    assert not [row for row in rows for token in ("test-token", "rotated-token") if token in "".join(row)]


@pytest.mark.parametrize("value", ["an hour", "-60"])
def test_a_bad_max_age_fails_the_sync_naming_the_setting(hubspot_env, monkeypatch, value):
    monkeypatch.setenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS", value)
    result = run_daily_etl(asset_selection=SYNC_ONLY)
    assert not result.success
    assert "HUBSPOT_PROPERTIES_MAX_AGE_SECONDS must be" in failure_message(result)
    assert hubspot_env.count_requests() == 0


@pytest.mark.e2e
def test_a_property_deleted_after_the_listing_fails_the_attempt_and_the_step_retry_lists_again(
    hubspot_env, mariadb_url, monkeypatch
):
    load_and_sync()  # the listing is stored, with source_customer_id as the sync created it
    hubspot_env.delete_property("source_customer_id")
    make_every_contact_due(mariadb_url)
    hubspot_env.reset_log()
    # The step RetryPolicy is built when the definitions load: a `dagster` process that sees these.
    for name, value in SHORT_RETRIES.items():
        monkeypatch.setenv(name, value)

    result = run_dagster("asset", "materialize", "-m", "etl_assets", "--select", "hubspot_contacts", timeout=300)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        retries = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 1
    # The first attempt's batches were refused for the property; the retry listed and created it.
    first = hubspot_env.request_log[0]
    assert (first.path, first.status) == ("/crm/v3/objects/contacts/batch/upsert", 400)
    assert property_requests(hubspot_env) == [LISTING, CREATING]
    stored = hubspot_env.contacts_snapshot()
    with sa.create_engine(mariadb_url).connect() as conn:
        contacts = dict(conn.execute(sa.text("SELECT email, customer_id FROM contacts")).all())
        synced = count(mariadb_url, "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'synced'")
    assert synced == len(contacts) == len(stored) == 988
    assert all(stored[email]["properties"]["source_customer_id"] == contacts[email] for email in contacts)


def test_a_property_refused_after_a_fresh_listing_fails_as_before_and_drops_the_stored_listing(
    hubspot_env, mariadb_url, monkeypatch
):
    # Listed every run: the refusal is HubSpot's current answer, not a stale listing's (no step retry).
    monkeypatch.setenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS", "0")
    load_and_sync()
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_property_definitions") == 1
    hubspot_env.define_property("country", "enumeration", options=[("xx", "Nowhere")])
    make_every_contact_due(mariadb_url)

    result = run_daily_etl(asset_selection=SYNC_ONLY)

    assert not result.success
    assert "HubSpot property 'country' takes none of the" in failure_message(result)
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_property_definitions") == 0
