"""The preflight: what would fail a run, found before any data moves, in one table.

The pure parts (rows from answers, the verdict) without a server; the rest with the real
resources against MariaDB and the local HubSpot and Kaggle servers, through the `preflight` job
in-process, or through `run_checks` where a retryable failure would start the step's RetryPolicy
(its delay is read when the definitions load: minutes).
"""

from __future__ import annotations

import logging
import uuid
from importlib import resources

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from etl_assets import preflight as checks
from etl_assets.contacts.mapping import parse_column_map
from etl_assets.definitions import defs
from etl_assets.errors import PermanentError, TransientError
from etl_assets.hubspot.properties import PropertyDefinition, mapping_problems
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource
from etl_assets.resources.kaggle import KaggleResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets_tests.assets.test_assets import failure_message, run_daily_etl
from etl_assets_tests.conftest import MARIADB_ADMIN_URL

LOG = logging.getLogger("test_preflight")
ALL_SCOPES = {"crm.objects.contacts.write", "crm.schemas.contacts.read", "crm.schemas.contacts.write"}
SOURCE_STEPS = [dg.AssetKey("kaggle_dataset"), dg.AssetKey("contacts_table")]


def run_preflight() -> tuple[dg.ExecuteInProcessResult, str]:
    """The `preflight` job's result, and its checks table as the instance keeps it (an observation of
    the asset, recorded whether the step passed or failed)."""
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("preflight").execute_in_process(instance=instance, raise_on_error=False)
    [record] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
    return result, record.dagster_event.event_specific_data.asset_observation.metadata["checks"].value


def rows_of(markdown: str) -> dict[str, tuple[str, str]]:
    """check -> (result, what to change), from the Markdown table."""
    rows = {}
    for line in markdown.splitlines()[2:]:
        check, result, change = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[check] = (result, change)
    return rows


def direct_checks(quick: bool = False) -> list[checks.Row]:
    """run_checks with the resources as definitions.py builds them, outside Dagster (no step retries)."""
    secrets = SecretsResource()
    return checks.run_checks(
        secrets,
        KaggleResource(secrets=secrets),
        DatabaseResource(secrets=secrets),
        HubSpotResource(secrets=secrets),
        LOG,
        quick=quick,
    )


def by_check(rows: list[checks.Row]) -> dict[str, checks.Row]:
    return {row.check: row for row in rows}


def map_field(tmp_path, monkeypatch, field: str, hubspot: str) -> None:
    """ETL_COLUMN_MAP: the default map with `field` sent to the HubSpot property `hubspot` (no declared type)."""
    document = yaml.safe_load(resources.files("etl_assets.data").joinpath("default_column_map.yaml").read_text())
    for spec in document["fields"]:
        if spec["field"] == field:
            spec["hubspot"] = hubspot
            spec.pop("hubspot_type", None)
    path = tmp_path / "column_map.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("ETL_COLUMN_MAP", str(path))


# --------------------------------------------------------------------------- pure parts


def test_verdict_names_every_failure_and_is_transient_only_when_every_failure_is():
    ok = checks.Row("a", checks.OK)
    outage = checks.Row("Kaggle dataset", checks.FAIL, "Kaggle answered 503", transient=True)
    wrong = checks.Row("HubSpot property x", checks.FAIL, "is read-only")
    assert checks.verdict([ok, checks.Row("b", checks.WARN, "slow")]) is None
    assert isinstance(checks.verdict([ok, outage]), TransientError)
    both = checks.verdict([outage, ok, wrong])
    assert isinstance(both, PermanentError)
    assert "2 check(s) failed" in str(both)
    assert "[Kaggle dataset] Kaggle answered 503" in str(both) and "[HubSpot property x] is read-only" in str(both)
    markdown = checks.markdown_table([checks.Row("c|d", checks.FAIL, "a|b", "x")])
    assert markdown.splitlines()[2] == "| c\\|d | fail: a\\|b | x |"


def test_property_rows_one_per_mapped_property():
    column_map = parse_column_map(
        {
            "fields": [
                {"source": "Email", "field": "email", "hubspot": "email"},
                {"source": "S", "field": "subscription_date", "type": "date", "hubspot": "subscription_date"},
                {"source": "C", "field": "city", "hubspot": "createdate"},
                {"source": "N", "field": "note", "hubspot": "etl_note"},
            ]
        },
        "test map",
    )
    definitions = {
        "email": PropertyDefinition("email", "string"),
        "subscription_date": PropertyDefinition("subscription_date", "number", "number"),
        "createdate": PropertyDefinition("createdate", "datetime", "date", read_only=True),
    }
    rows = by_check(checks.property_rows(column_map, definitions, may_create=True))
    assert rows["HubSpot property email"].status == checks.OK
    assert rows["HubSpot property subscription_date"].status == checks.FAIL
    # the rows carry mapping_problems' words (whatever they are)
    problems = mapping_problems(column_map, definitions, True)
    assert rows["HubSpot property subscription_date"].detail == problems["subscription_date"]
    assert "number" in problems["subscription_date"]
    assert rows["HubSpot property createdate"].detail == problems["createdate"]
    assert "read-only" in problems["createdate"]
    assert rows["HubSpot property etl_note"].detail == "missing: will be created as string"
    assert checks.to_create(column_map, definitions, True) == ["etl_note"]
    assert checks.schema_write_row(["etl_note"]).status == checks.WARN
    not_created = by_check(checks.property_rows(column_map, definitions, may_create=False))
    assert not_created["HubSpot property etl_note"].status == checks.FAIL


def test_kaggle_file_row_picks_as_the_loader_does():
    names = ["big.csv", "readme.md", "small.csv"]
    assert checks.kaggle_file_row(names, None).detail == "big.csv (the largest CSV)"
    assert checks.kaggle_file_row(names, "small.csv").status == checks.OK
    missing = checks.kaggle_file_row(names, "nope.csv")
    assert missing.status == checks.FAIL and "KAGGLE_FILE='nope.csv' is not in the dataset" in missing.detail
    assert checks.kaggle_file_row(["readme.md"], None).status == checks.FAIL
    assert checks.local_infile_row(0).status == checks.WARN and checks.local_infile_row("ON").status == checks.OK


# --------------------------------------------------------------------------- embedded defaults


def test_the_code_location_loads_with_the_job_and_the_asset():
    """A job and an op of one name clash only when the whole repository loads (as the webserver does)."""
    repository = defs.get_repository_def()
    repository.load_all_definitions()
    assert {"preflight", "daily_etl"} <= {job.name for job in repository.get_all_jobs()}
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("kaggle_dataset")).parent_keys == {dg.AssetKey("preflight_checks")}


def test_embedded_defaults_pass_with_a_dry_run_and_kaggle_skipped(clean_env):
    result, markdown = run_preflight()
    assert result.success
    rows = rows_of(markdown)
    assert rows["HubSpot mode"][0].startswith("ok: dry run (nothing configured")
    assert rows["Kaggle dataset"][0] == "skipped: the embedded sample is used"
    assert rows["database (SQLite)"][0].startswith("ok: ") and "its folder is writable" in rows["database (SQLite)"][0]
    assert not any(result.startswith("fail") for result, _ in rows.values())
    [materialization] = result.asset_materializations_for_node("preflight_checks")
    assert materialization.metadata["quick"].value is False

    # daily_etl runs it first (quick), and still succeeds on nothing configured
    daily = run_daily_etl()
    assert daily.success
    [first] = daily.asset_materializations_for_node("preflight_checks")
    assert first.metadata["quick"].value is True


# --------------------------------------------------------------------------- HubSpot


# (set-up, the property, words its problem names)
PROPERTY_CASES = {
    "number": (
        lambda server, tmp, env: server.define_property("subscription_date", "number"),
        "subscription_date",
        ("number",),
    ),
    "enumeration": (
        lambda server, tmp, env: server.define_property("subscription_date", "enumeration", options=["2020", "2021"]),
        "subscription_date",
        ("enumeration",),
    ),
    "read-only": (
        lambda server, tmp, env: map_field(tmp, env, "subscription_date", "createdate"),
        "createdate",
        ("'createdate'", "read-only"),
    ),
}


@pytest.mark.parametrize("case", list(PROPERTY_CASES))
def test_a_property_the_map_cannot_write_fails_the_preflight_and_a_forced_sync_stops_at_once(
    hubspot_env, mariadb_url, tmp_path, monkeypatch, case
):
    setup, prop, words = PROPERTY_CASES[case]
    setup(hubspot_env, tmp_path, monkeypatch)
    result, markdown = run_preflight()
    assert not result.success
    message = failure_message(result)
    named = message.split(f"[HubSpot property {prop}] ", 1)[1]
    assert all(word in named.split(";")[0] for word in words), message
    assert "1 check(s) failed" in message
    rows = rows_of(markdown)
    assert rows[f"HubSpot property {prop}"][0].startswith("fail: ")
    assert rows["HubSpot property firstname"][0] == "ok: string (text), writable"
    assert rows["HubSpot token"][0] == "ok: accepted"
    assert hubspot_env.count_requests("/batch/upsert") == 1  # the write-scope probe, with no input
    assert [r.n_inputs for r in hubspot_env.request_log if "/batch/upsert" in r.path] == [0]
    assert not hubspot_env.contacts_snapshot()

    # Loaded anyway, then the sync forced: it stops at the property list, before any batch.
    assert run_daily_etl(asset_selection=SOURCE_STEPS).success
    before = hubspot_env.count_requests()
    forced = run_daily_etl(asset_selection=[dg.AssetKey("hubspot_contacts")])
    assert not forced.success
    assert all(word in failure_message(forced) for word in (f"'{prop}'", *words))
    assert hubspot_env.count_requests() - before <= 3
    assert hubspot_env.count_requests("/batch/upsert") == 1
    assert not hubspot_env.contacts_snapshot()


@pytest.mark.parametrize("lacking", ["crm.schemas.contacts.read", "crm.objects.contacts.write"])
def test_a_missing_scope_is_named(hubspot_env, lacking):
    hubspot_env.scopes = ALL_SCOPES - {lacking}
    result, markdown = run_preflight()
    assert not result.success
    message = failure_message(result)
    assert (
        f"[HubSpot scope {lacking}] HubSpot's private app lacks the scope(s) ['{lacking}'] (403 MISSING_SCOPES)"
        in message
    )
    assert "rejected the access token" not in message
    rows = rows_of(markdown)
    assert rows["HubSpot token"][0] == "ok: accepted"
    other = (ALL_SCOPES - {lacking, "crm.schemas.contacts.write"}).pop()
    assert rows[f"HubSpot scope {other}"][0].startswith("ok: granted")
    if lacking == "crm.schemas.contacts.read":
        assert rows["HubSpot properties"][0] == "skipped: cannot be listed without crm.schemas.contacts.read"
    else:
        assert rows["HubSpot property subscription_date"][0] == "ok: missing: will be created as date"
        assert rows["HubSpot scope crm.schemas.contacts.write"][0].startswith(
            "warn: not checked: it cannot be checked without creating a property"
        )
    assert hubspot_env.count_requests() == 2  # the property list and an upsert of no contact
    assert not hubspot_env.contacts_snapshot()


def test_a_rejected_token_and_a_token_the_files_backend_lacks_are_named(hubspot_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "revoked-token-7f3a")
    result, markdown = run_preflight()
    assert not result.success
    message = failure_message(result)
    assert "[HubSpot token] HubSpot rejected the access token (401 INVALID_AUTHENTICATION" in message
    assert "revoked-token-7f3a" not in message and "revoked-token-7f3a" not in markdown
    assert hubspot_env.count_requests() == 1  # nothing else is tried with a rejected token

    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "files")
    monkeypatch.setenv("ETL_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")
    result, markdown = run_preflight()
    assert not result.success
    message = failure_message(result)
    assert (
        "[secret HUBSPOT_ACCESS_TOKEN] secret HUBSPOT_ACCESS_TOKEN is missing from the files secrets backend "
        f"(no file {tmp_path / 'secrets' / 'HUBSPOT_ACCESS_TOKEN'})"
    ) in message
    rows = rows_of(markdown)
    assert rows["secrets backend"][0].startswith(f"ok: files: files in {tmp_path / 'secrets'}")
    assert rows["secret ETL_DATABASE_PASSWORD"][0].startswith(
        "warn: secret ETL_DATABASE_PASSWORD is missing from the files secrets backend"
    )
    assert hubspot_env.count_requests() == 1  # no request without a token


def test_daily_etl_with_a_failing_preflight_moves_no_data(hubspot_env, mariadb_url):
    hubspot_env.define_property("subscription_date", "number")
    result = run_daily_etl()
    assert not result.success
    [failed] = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failed == "preflight_checks"
    assert "[HubSpot property subscription_date]" in failure_message(result)
    assert not result.asset_materializations_for_node("kaggle_dataset")
    assert not sa.inspect(sa.create_engine(mariadb_url)).get_table_names()  # no contacts, no probe left
    assert hubspot_env.count_requests() == 1  # quick: the property list only
    assert hubspot_env.count_requests("/batch/upsert") == 0


def test_the_preflight_stores_a_listing_the_sync_can_reuse_and_never_fails_for_it(
    hubspot_env, mariadb_url, monkeypatch
):
    hubspot_env.define_property("source_customer_id", "string")
    hubspot_env.define_property("subscription_date", "date")
    monkeypatch.setenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS", "soon")  # the sync's to refuse, not the preflight's
    refused, refused_table = run_preflight()
    assert refused.success
    assert "hubspot_property_definitions" not in sa.inspect(sa.create_engine(mariadb_url)).get_table_names()

    monkeypatch.delenv("HUBSPOT_PROPERTIES_MAX_AGE_SECONDS")
    result, table = run_preflight()
    assert result.success and table == refused_table  # storing changes nothing in the report
    with sa.create_engine(mariadb_url).connect() as conn:
        [stored] = conn.execute(sa.text("SELECT definitions FROM hubspot_property_definitions")).scalars()
    assert '"source_customer_id"' in stored and '"createdate"' not in stored  # the mapped properties only


# --------------------------------------------------------------------------- database


@pytest.fixture
def limited_user(mariadb_url):
    """A MariaDB user with a password and only SELECT and INSERT on the test database."""
    name = f"pf_{uuid.uuid4().hex[:8]}"
    database = sa.make_url(mariadb_url).database
    admin = sa.create_engine(MARIADB_ADMIN_URL)
    with admin.begin() as conn:
        for host in ("%", "localhost"):
            conn.exec_driver_sql("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, "right-pw-1234"))
            conn.exec_driver_sql(f"GRANT SELECT, INSERT ON {database}.* TO %s@%s", (name, host))
    yield sa.make_url(mariadb_url).set(username=name, password=None).render_as_string(hide_password=False)
    with admin.begin() as conn:
        for host in ("%", "localhost"):
            conn.exec_driver_sql("DROP USER IF EXISTS %s@%s", (name, host))
    admin.dispose()


def test_database_login_privileges_and_local_infile(clean_env, monkeypatch, mariadb_url, limited_user):
    monkeypatch.setenv("ETL_DATABASE_URL", mariadb_url)
    rows = by_check(direct_checks())
    assert rows["database login"].status == checks.OK
    assert rows["database privileges"].status == checks.OK
    with sa.create_engine(MARIADB_ADMIN_URL).connect() as conn:
        infile = conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
    assert rows["database local_infile"].status == (checks.OK if str(infile) in ("1", "ON") else checks.WARN)
    assert rows["database local_infile"].detail.startswith("ON" if str(infile) in ("1", "ON") else "OFF")
    assert not sa.inspect(sa.create_engine(mariadb_url)).get_table_names()  # the probe left nothing

    monkeypatch.setenv("ETL_DATABASE_URL", limited_user)
    monkeypatch.setenv("ETL_DATABASE_PASSWORD", "wrong-pw-5678")
    result, _ = run_preflight()  # permanent: no step retry
    assert not result.success
    message = failure_message(result)
    assert "[database login] cannot connect to the database mysql+pymysql://pf_" in message
    assert "Access denied for user" in message and "wrong-pw-5678" not in message

    monkeypatch.setenv("ETL_DATABASE_PASSWORD", "right-pw-1234")
    rows = by_check(direct_checks())
    assert rows["secret ETL_DATABASE_PASSWORD"].status == checks.OK
    assert rows["database login"].status == checks.OK
    privileges = rows["database privileges"]
    assert privileges.status == checks.FAIL and "refused: CREATE (CREATE command denied" in privileges.detail
    assert privileges.change.startswith("GRANT CREATE, INDEX, INSERT, UPDATE, SELECT, DELETE, ALTER, DROP ON `")

    # Everything but DROP: the probe says which scratch table it could not remove.
    user = sa.make_url(limited_user).username
    database = sa.make_url(mariadb_url).database
    with sa.create_engine(MARIADB_ADMIN_URL).begin() as conn:
        for host in ("%", "localhost"):
            conn.exec_driver_sql(f"GRANT CREATE, INDEX, UPDATE, DELETE, ALTER ON {database}.* TO %s@%s", (user, host))
    privileges = by_check(direct_checks())["database privileges"]
    assert privileges.status == checks.FAIL
    assert "DROP (" in privileges.detail and "the scratch table etl_preflight_probe is left behind" in privileges.detail
    assert sa.inspect(sa.create_engine(mariadb_url)).get_table_names() == ["etl_preflight_probe"]

    monkeypatch.setenv("ETL_DATABASE_URL", "mysql+pymysql://etl@127.0.0.1:1/etl")
    monkeypatch.setenv("ETL_RETRY_ATTEMPTS", "1")
    rows = direct_checks()
    login = by_check(rows)["database login"]
    assert login.status == checks.FAIL and login.transient
    assert "cannot connect to the database mysql+pymysql://etl:***@127.0.0.1:1/etl" in login.detail
    assert isinstance(checks.verdict(rows), TransientError)  # the step's RetryPolicy applies


# --------------------------------------------------------------------------- Kaggle (shared port: one test)


def test_kaggle_dataset_file_and_refusals(clean_env, monkeypatch, kaggle_server):
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_DATASET", "datablist/customers")
    monkeypatch.setenv("ETL_RETRY_ATTEMPTS", "1")
    rows = by_check(direct_checks())
    assert rows["Kaggle credentials"].status == checks.FAIL
    assert "secret KAGGLE_API_TOKEN is missing from the env secrets backend" in rows["Kaggle credentials"].detail
    assert kaggle_server.count_requests() == 0

    monkeypatch.setenv("KAGGLE_USERNAME", kaggle_server.username)
    monkeypatch.setenv("KAGGLE_KEY", kaggle_server.key)
    rows = by_check(direct_checks())
    assert rows["Kaggle credentials"].status == checks.OK
    assert (
        rows["Kaggle dataset"].detail
        == f"datablist/customers version 1, {rows['Kaggle dataset'].detail.split(', ')[1]}"
    )
    assert rows["Kaggle file"].detail == "customers-1000.csv (the largest CSV)"
    assert kaggle_server.downloads == 0 and kaggle_server.count_requests("DownloadDataset") == 0

    monkeypatch.setenv("KAGGLE_FILE", "people.csv")
    assert "KAGGLE_FILE='people.csv' is not in the dataset" in by_check(direct_checks())["Kaggle file"].detail
    monkeypatch.delenv("KAGGLE_FILE")

    monkeypatch.setenv("KAGGLE_DATASET", "datablist/nope")
    missing = by_check(direct_checks())["Kaggle dataset"]
    assert missing.status == checks.FAIL and not missing.transient
    assert "Kaggle has no dataset datablist/nope (404)" in missing.detail

    monkeypatch.setenv("KAGGLE_DATASET", "datablist/customers")
    kaggle_server.set_access("datablist", "customers", private=True)
    refused = by_check(direct_checks())["Kaggle dataset"]
    assert "Kaggle refused access (403) to dataset datablist/customers" in refused.detail
    kaggle_server.set_access("datablist", "customers", private=False)

    kaggle_server.fail_next(503, count=1, path_contains="GetDataset")
    rows = direct_checks()
    outage = by_check(rows)["Kaggle dataset"]
    assert outage.status == checks.FAIL and outage.transient and "503" in outage.detail
    assert isinstance(checks.verdict(rows), TransientError)

    quick = by_check(direct_checks(quick=True))
    assert quick["Kaggle dataset"].status == checks.SKIPPED
    assert kaggle_server.count_requests("DownloadDataset") == 0
