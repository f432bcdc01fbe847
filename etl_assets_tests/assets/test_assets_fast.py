"""Each asset materialized on its own, in seconds: SQLite, the packaged sample, and an in-process
stand-in for HubSpot's narrow interface. No MariaDB, no server, no subprocess (`make test-fast`).

The slower tests beside this file run the same assets against MariaDB and the local servers.
"""

import json
import logging

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets.assets import contacts_table, hubspot_contacts, kaggle_dataset
from etl_assets.hubspot.properties import PropertyDefinition
from etl_assets.hubspot.sync import UpsertAnswer
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import LIVE, HubSpotResource, SyncMode
from etl_assets.resources.kaggle import KaggleResource
from etl_assets.resources.secrets import SecretsResource

pytestmark = pytest.mark.fast

STANDARD = ["email", "firstname", "lastname", "company", "city", "country", "phone", "mobilephone", "website"]


class InProcessContacts:
    """What the sync asks of HubSpotApi, kept in a dict: property definitions and batch upserts."""

    account_key = "in-process"

    def __init__(self, properties: dict[str, PropertyDefinition]):
        self.properties = properties
        self.contacts: dict[str, dict] = {}
        self.upserts: list[int] = []
        self.calls = self.rate_limited = self.retried = 0

    def contact_properties(self) -> dict[str, PropertyDefinition]:
        self.calls += 1
        return dict(self.properties)

    def create_contact_property(self, name: str, label: str, kind: str) -> PropertyDefinition:
        self.calls += 1
        self.properties[name] = PropertyDefinition(name, kind)
        return self.properties[name]

    def upsert_contacts(self, inputs: list[dict]) -> UpsertAnswer:
        self.calls += 1
        self.upserts.append(len(inputs))
        results = []
        for item in inputs:
            new = item["id"] not in self.contacts
            stored = self.contacts.setdefault(item["id"], {"id": str(len(self.contacts) + 1), "properties": {}})
            stored["properties"].update(item["properties"])
            results.append({"id": stored["id"], "properties": {"email": item["id"]}, "new": new})
        return UpsertAnswer(results[::-1])  # HubSpot promises no order


class InProcessHubSpot(HubSpotResource):
    """HubSpotResource's narrow interface (mode, open_api) on the test's InProcessContacts.

    Dagster rebuilds resources for each run, so the stand-in is found by the module, not held.
    """

    def mode(self) -> SyncMode:
        return SyncMode(LIVE, "in-process stand-in")

    def open_api(self, log: logging.Logger) -> InProcessContacts:
        return ACCOUNT["api"]


ACCOUNT: dict[str, InProcessContacts] = {}


@pytest.fixture
def account(monkeypatch):
    """An account with HubSpot's standard properties as strings; tests add their own."""
    api = InProcessContacts({name: PropertyDefinition(name, "string") for name in STANDARD})
    monkeypatch.setitem(ACCOUNT, "api", api)
    return api


@pytest.fixture
def resources(clean_env):
    secrets = SecretsResource()
    return {
        "secrets": secrets,
        "kaggle": KaggleResource(secrets=secrets),
        "database": DatabaseResource(secrets=secrets),
        "hubspot": HubSpotResource(secrets=secrets),
    }


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def materialize(asset, resources) -> dict:
    result = dg.materialize([asset], resources=resources, raise_on_error=False)
    assert result.success
    return metadata(result, asset.key.path[-1])


def test_kaggle_dataset_on_the_embedded_sample(resources):
    found = materialize(kaggle_dataset, resources)
    assert (found["rows"], found["dataset"]) == (1000, "embedded/sample-customers")


def test_contacts_table_on_sqlite_loads_then_leaves_an_unchanged_source_alone(resources):
    materialize(kaggle_dataset, resources)
    first = materialize(contacts_table, resources)
    assert (first["inserted"], first["rejected"], first["row_count"]) == (988, 12, 988)
    again = materialize(contacts_table, resources)
    assert again["inserted"] == again["updated"] == again["deleted"] == 0


def test_hubspot_contacts_dry_run_writes_the_outbox(resources):
    materialize(kaggle_dataset, resources)
    materialize(contacts_table, resources)
    dry = materialize(hubspot_contacts, resources)
    assert (dry["mode"], dry["would_send_contacts"], dry["would_send_batches"]) == ("dry run", 988, 10)
    with open(dry["outbox"], encoding="utf-8") as outbox:
        first = json.loads(outbox.readline())
    assert first["path"] == "/crm/v3/objects/contacts/batch/upsert" and len(first["body"]["inputs"]) == 100


def test_hubspot_contacts_live_sends_only_what_changed(resources, account):
    resources = {**resources, "hubspot": InProcessHubSpot(secrets=resources["secrets"])}
    materialize(kaggle_dataset, resources)
    materialize(contacts_table, resources)
    synced = materialize(hubspot_contacts, resources)
    assert (synced["created"], synced["failed"], synced["pending"]) == (988, 0, 0)
    assert sorted(account.properties) == sorted(STANDARD + ["source_customer_id", "subscription_date"])
    assert account.properties["subscription_date"].type == "date"
    assert sum(account.upserts) == 988 and max(account.upserts) == 100
    again = materialize(hubspot_contacts, resources)
    assert again["due"] == 0 and sum(account.upserts) == 988  # nothing changed: nothing sent


def test_hubspot_contacts_live_refuses_a_property_of_another_type(resources, account):
    account.properties["subscription_date"] = PropertyDefinition("subscription_date", "number")
    resources = {**resources, "hubspot": InProcessHubSpot(secrets=resources["secrets"])}
    materialize(kaggle_dataset, resources)
    materialize(contacts_table, resources)
    result = dg.materialize([hubspot_contacts], resources=resources, raise_on_error=False)
    assert not result.success and account.upserts == []
    engine = sa.create_engine(f"sqlite:///{resources['database']._url().database}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM hubspot_sync_state")).scalar_one() == 0
