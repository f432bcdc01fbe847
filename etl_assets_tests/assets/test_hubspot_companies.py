"""Companies and contact-company associations through the real steps, MariaDB and the local HubSpot server.

The source is a generated customers CSV handed to `contacts_table` through the data dir's manifest
(as `kaggle_dataset` leaves it), so these tests need neither Kaggle nor its shared port.
"""

import collections
import csv
import json

import dagster as dg
import pytest

from etl_assets import settings
from etl_assets.contacts.source import CsvFormat
from etl_assets.dataset import describe_csv, write_manifest
from etl_assets.definitions import defs
from etl_assets.hubspot.companies_keys import normalise_domain, normalise_name
from etl_assets_tests.assets.test_assets import check_result, materialization
from etl_assets_tests.conftest import refuse_in_fast_tier
from etl_assets_tests.servers.hubspot_crm_objects import (
    ASSOCIATE_PATH,
    COMPANY_CREATE_PATH,
    COMPANY_UPDATE_PATH,
    DISSOCIATE_PATH,
    HubSpotCrmServer,
)

STEPS = [
    dg.AssetKey(name)
    for name in ("contacts_table", "hubspot_contacts", "hubspot_companies", "hubspot_contact_companies")
]
HEADER = ["Index", "Customer Id", "First Name", "Last Name", "Company", "City", "Country", "Phone 1", "Phone 2",
          "Email", "Subscription Date", "Website"]  # fmt: skip
WORDS = ["Rasmussen", "Vaughn", "Moran", "Dawson", "Pruitt", "Holloway", "Bishop", "Cantu", "Gallagher", "Mcgee"]
WITH_WEBSITE = 780  # companies 780.. have no website anywhere: keyed by name


def company(i: int) -> tuple[str, str | None]:
    base = f"{WORDS[i % len(WORDS)]} {i // len(WORDS) + 1}"
    return base, (f"{base.split()[0].lower()}{i // len(WORDS) + 1}.com" if i < WITH_WEBSITE else None)


def contact(k: int, companies: int = 800) -> dict:
    """Contact k works for company k % companies, spelled and linked one of several dirty ways."""
    i, m = k % companies, k // companies
    base, domain = company(i)
    names = [f"{base} Inc.", f"{base.upper()}, INC", f"  {base.lower()}   inc ", f"{base} LLC", base]
    websites = ["", "n/a", "-"]
    if domain:
        websites += [f"https://www.{domain}/about", domain, f"http://{domain}?x=1", f"WWW.{domain.upper()}"]
    return {
        "Index": str(k + 1),
        "Customer Id": f"C{k:05d}",
        "First Name": "Ann",
        "Last Name": f"Lee{k}",
        "Company": names[(m + k) % len(names)],
        "City": "Ulm",
        "Country": "Germany",
        "Phone 1": "+1",
        "Phone 2": "",
        "Email": f"user{k}@mail{k % 50}.contacts-example.org",
        "Subscription Date": "2021-01-01",
        "Website": websites[(m + i) % len(websites)],
    }


def dataset(with_company: int = 4950, without: int = 50, companies: int = 800) -> list[dict]:
    rows = [contact(k, companies) for k in range(with_company)]
    for k in range(with_company, with_company + without):  # nothing usable: no company
        rows.append({**contact(k, companies), "Company": ["n/a", "-", ""][k % 3], "Website": ["-", "n/a", ""][k % 3]})
    return rows


def feed(rows: list[dict], tmp_path, version: int) -> None:
    """Leave `rows` where contacts_table loads from, as kaggle_dataset would."""
    path = tmp_path / f"customers-v{version}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, HEADER)
        writer.writeheader()
        writer.writerows(rows)
    write_manifest(settings.data_dir(), describe_csv("test/companies", str(version), path, CsvFormat()))


def run(run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("daily_etl").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, asset_selection=STEPS, run_config=run_config
    )
    assert result.success, [e.message for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return result


@pytest.fixture
def crm_server(request):
    refuse_in_fast_tier(request, "the local HubSpot server")
    with HubSpotCrmServer() as server:
        yield server


@pytest.fixture
def crm_env(clean_env, monkeypatch, mariadb_url, crm_server) -> HubSpotCrmServer:
    """MariaDB and a valid token for the local HubSpot server with companies; companies on."""
    monkeypatch.setenv("ETL_DATABASE_URL", mariadb_url)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", crm_server.token)
    monkeypatch.setenv("HUBSPOT_API_BASE", crm_server.url)
    monkeypatch.setenv("HUBSPOT_COMPANIES", "true")
    return crm_server


def associations_by_email(server: HubSpotCrmServer) -> dict[str, list[str]]:
    by_id = {record["id"]: email for email, record in server.contacts_snapshot().items()}
    found = collections.defaultdict(list)
    for contact_id, company_id in server.associations:
        found[by_id[contact_id]].append(company_id)
    return found


def test_5000_contacts_of_800_dirty_companies_each_associated_once_then_nothing_then_a_move(crm_env, tmp_path):
    server = crm_env
    rows = dataset()
    feed(rows, tmp_path, 1)
    first = run()

    companies = materialization(first, "hubspot_companies")
    assert (companies["companies"], companies["created"], companies["failed"]) == (800, 800, 0)
    snapshot = server.companies_snapshot()
    assert len(snapshot) == 800
    domains = [record["properties"].get("domain") for record in snapshot.values()]
    assert len({d for d in domains if d}) == WITH_WEBSITE and domains.count(None) == 800 - WITH_WEBSITE
    id_of = {(r["properties"].get("domain") or normalise_name(r["properties"]["name"])): i for i, r in snapshot.items()}

    linked = associations_by_email(server)
    assert len(linked) == 4950 and all(len(ids) == 1 for ids in linked.values())
    for k, row in enumerate(rows[:4950]):
        base, domain = company(k % 800)
        assert linked[row["Email"].lower()] == [id_of[domain or normalise_name(base)]]
    associations = materialization(first, "hubspot_contact_companies")
    assert (associations["associated"], associations["waiting"], associations["failed"]) == (4950, 0, 0)
    assert check_result(first, "hubspot_companies_failed_rate").passed
    assert check_result(first, "hubspot_contact_companies_failed_rate").passed

    counts = server.request_counts()
    assert (counts[COMPANY_CREATE_PATH], counts[ASSOCIATE_PATH], counts[DISSOCIATE_PATH]) == (8, 50, 0)
    # One account, one window: contacts, companies and associations together never went over it.
    assert server.max_requests_in_window() <= server.rate_limit and server.count_status(429) == 0
    print("first run requests by path:", json.dumps(counts))

    before = server.count_requests()
    again = run()
    assert server.count_requests() == before  # nothing changed: not one request
    assert materialization(again, "hubspot_companies")["api_calls"] == 0
    assert materialization(again, "hubspot_contact_companies")["unchanged"] == 4950

    # Contact 0 moves to contact 1's company; contact 1 loses its company. Contact 0 also has a
    # company someone else associated in HubSpot: the sync never touches that one.
    outside = server.add_company({"name": "Their own pick"})
    server.add_association(rows[0]["Email"], outside, ("HUBSPOT_DEFINED", 1))
    moved = [dict(row) for row in rows]
    moved[0].update(Company=rows[1]["Company"], Website=rows[1]["Website"])
    moved[1].update(Company="n/a", Website="-")
    feed(moved, tmp_path, 2)
    server.reset_log()
    third = run()
    linked = associations_by_email(server)
    base, domain = company(1)
    assert sorted(linked[rows[0]["Email"].lower()]) == sorted([id_of[domain or normalise_name(base)], outside])
    assert rows[1]["Email"].lower() not in linked
    counts = server.request_counts()
    assert (counts[DISSOCIATE_PATH], counts[ASSOCIATE_PATH], counts[COMPANY_CREATE_PATH]) == (1, 1, 0)
    assert counts[COMPANY_UPDATE_PATH] <= 1  # a company's most common spelling may have changed
    result = materialization(third, "hubspot_contact_companies")
    assert (result["associated"], result["archived"], result["unchanged"]) == (1, 2, 4948)


def test_the_rate_window_is_shared_by_contacts_companies_and_associations(crm_env, tmp_path):
    server = crm_env
    server.rate_limit = 12  # per 10 s: the 25 requests of this run need three windows, across step boundaries
    feed(dataset(with_company=990, without=10, companies=120), tmp_path, 1)
    result = run({"resources": {"hubspot": {"config": {"rate_limit": 12}}}})
    assert materialization(result, "hubspot_contact_companies")["associated"] == 990
    counts = server.request_counts()
    assert counts[COMPANY_CREATE_PATH] == 2 and counts[ASSOCIATE_PATH] == 10
    assert server.max_requests_in_window() <= 12
    assert server.count_status(429) == 0


def test_companies_off_send_nothing_and_say_so(crm_env, tmp_path, monkeypatch):
    server = crm_env
    monkeypatch.setenv("HUBSPOT_COMPANIES", "false")
    feed(dataset(with_company=190, without=10, companies=40), tmp_path, 1)
    result = run()
    for asset in ("hubspot_companies", "hubspot_contact_companies"):
        metadata = materialization(result, asset)
        assert metadata["enabled"] is False and metadata["api_calls"] == 0
        assert "HUBSPOT_COMPANIES=false" in metadata["summary"]
    assert not any("compan" in path for path in server.request_counts())
    assert materialization(result, "hubspot_contacts")["created"] == 200  # contacts as ever
    assert check_result(result, "hubspot_companies_failed_rate").passed


def test_a_dry_run_writes_the_company_requests_to_the_outbox_and_sends_nothing(crm_env, tmp_path, monkeypatch):
    server = crm_env
    monkeypatch.setenv("HUBSPOT_DRY_RUN", "true")
    feed(dataset(with_company=190, without=10, companies=40), tmp_path, 1)
    result = run()
    assert server.count_requests() == 0
    companies = materialization(result, "hubspot_companies")
    assert (companies["mode"], companies["would_create"], companies["would_send_batches"]) == ("dry run", 40, 1)
    [line] = [json.loads(line) for line in open(companies["outbox"])]
    assert line["path"] == COMPANY_CREATE_PATH and len(line["body"]["inputs"]) == 40
    assert {normalise_domain(i["properties"].get("domain")) for i in line["body"]["inputs"]} >= {"rasmussen1.com"}
    associations = materialization(result, "hubspot_contact_companies")
    assert (associations["would_associate"], associations["would_send_batches"]) == (190, 2)
    first = json.loads(open(associations["outbox"]).readline())
    assert first["path"] == ASSOCIATE_PATH
    assert first["body"]["inputs"][0]["from"]["id"].startswith("<contact ")  # no id before a live run
