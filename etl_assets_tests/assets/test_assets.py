"""The assets in-process, on MariaDB and the local servers: outcomes, checks and clear failures."""

import io
import zipfile

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets.definitions import defs
from etl_assets_tests.conftest import MARIADB_ADMIN_URL, SAMPLE_CSV

# daily_etl's data assets without its preflight: to see what a step itself does with a problem the
# preflight would have stopped the run for.
WITHOUT_PREFLIGHT = [dg.AssetKey(name) for name in ("kaggle_dataset", "contacts_table", "hubspot_contacts")]


def run_daily_etl(
    instance: dg.DagsterInstance | None = None, asset_selection: list[dg.AssetKey] | None = None
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("daily_etl")
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False, asset_selection=asset_selection
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.event_specific_data.error.message


def materialization(result, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def check_result(result, name: str) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and event.event_specific_data.check_name == name
    ]
    return evaluation


def count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def dirty_csv() -> bytes:
    """The sample plus rows only HubSpot can reject (special-use domains) and more in-file duplicates."""
    lines = SAMPLE_CSV.read_text().splitlines()
    header, body = lines[0], lines[1:]
    extra = []
    for i, domain in enumerate(["mail.invalid", "host.localhost", "box.test"], start=2001):
        extra.append(f"{i},X{i},Eve,Bad,Acme,Ulm,Germany,+1,,eve{i}@{domain},2021-01-01,")
    duplicate = body[10].split(",")
    duplicate[0], duplicate[9] = "2004", duplicate[9].upper()
    return "\n".join([header, *body, *extra, ",".join(duplicate)]).encode() + b"\n"


def test_dirty_data_every_valid_contact_arrives_and_each_bad_one_has_its_reason(
    pipeline_env, mariadb_url, hubspot_server, kaggle_server, monkeypatch
):
    kaggle_server.add_dataset("datablist", "customers", {"customers-1000.csv": dirty_csv()})
    monkeypatch.setenv("HUBSPOT_MAX_FAILED_RATE", "0.001")
    result = run_daily_etl()
    assert result.success
    loaded = materialization(result, "contacts_table")
    assert (loaded["rows_read"], loaded["rejected"], loaded["inserted"]) == (1004, 13, 991)
    synced = materialization(result, "hubspot_contacts")
    assert (synced["created"], synced["failed"], synced["pending"]) == (988, 3, 0)
    assert len(hubspot_server.contacts_snapshot()) == 988
    assert (
        count(
            mariadb_url,
            "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'failed' "
            "AND error_category = 'VALIDATION_ERROR' AND error_message LIKE '%INVALID_EMAIL%'",
        )
        == 3
    )
    assert (
        count(
            mariadb_url,
            "SELECT COUNT(*) FROM contacts_rejected WHERE source_row = 1004 "
            "AND reason_code = 'duplicate' AND reason LIKE 'duplicate email%'",
        )
        == 1
    )
    rejects = check_result(result, "contacts_reject_rate")
    assert rejects.passed and rejects.metadata["rejected"].value == 13
    assert rejects.metadata["top_reasons"].value == {"invalid_email": 5, "duplicate": 6, "missing_required": 2}
    failures = check_result(result, "hubspot_failed_rate")
    assert not failures.passed  # 3 of 991 is over the 0.1% set above
    assert failures.metadata["top_reasons"].value == {"VALIDATION_ERROR": 3}

    # Refused records wait for a change; nothing else is due, so the next run sends nothing.
    before = hubspot_server.count_requests("/batch/upsert")
    assert run_daily_etl().success
    assert hubspot_server.count_requests("/batch/upsert") == before


def test_daily_limit_leaves_the_rest_pending_and_the_next_run_finishes(pipeline_env, hubspot_server):
    hubspot_server.daily_limit = 6  # preflight's and the sync's property lists, 2 property creations, 2 batches
    first = run_daily_etl()
    assert first.success
    synced = materialization(first, "hubspot_contacts")
    assert synced["created"] == 200 and synced["pending"] == 788 and "daily limit" in synced["stopped_reason"]
    assert check_result(first, "hubspot_failed_rate").passed  # stopping early is not a failure
    hubspot_server.daily_limit = 1_000
    second = run_daily_etl()
    assert materialization(second, "hubspot_contacts")["created"] == 788
    assert len(hubspot_server.contacts_snapshot()) == 988


def test_hubspot_401_fails_at_once_saying_the_token_was_rejected(
    pipeline_env, mariadb_url, hubspot_server, monkeypatch
):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "revoked-token")
    stopped = run_daily_etl()  # by the preflight, before any data moves
    forced = run_daily_etl(asset_selection=WITHOUT_PREFLIGHT)  # the sync's own answer
    for result in (stopped, forced):
        assert not result.success
        message = failure_message(result)
        assert "HubSpot rejected the access token (401 INVALID_AUTHENTICATION" in message
        assert "revoked-token" not in message
    assert "before any data moved" in failure_message(stopped)
    assert "nothing was marked synced" in failure_message(forced)
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_sync_state") == 0
    assert hubspot_server.count_requests() == 2  # one each, no retry


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            lambda server, env: env.setenv("KAGGLE_KEY", "wrong-key"),
            "Kaggle rejected the credentials (401) for dataset datablist/customers",
        ),
        (
            lambda server, env: env.setenv("KAGGLE_DATASET", "datablist/nope"),
            "Kaggle has no dataset datablist/nope (404)",
        ),
        (
            lambda server, env: server.bump_version("datablist", "customers", zip_bytes=b"PK\x03\x04 not a zip"),
            "the downloaded archive is not a valid zip",
        ),
    ],
)
def test_kaggle_failures_are_clear_and_leave_the_table_as_it_was(
    pipeline_env, mariadb_url, kaggle_server, monkeypatch, setup, expected
):
    assert run_daily_etl().success
    before = count(mariadb_url, "SELECT COUNT(*) FROM etl_loads")
    setup(kaggle_server, monkeypatch)
    result = run_daily_etl()
    assert not result.success
    assert expected in failure_message(result)
    assert count(mariadb_url, "SELECT COUNT(*) FROM etl_loads") == before
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts") == 988


def test_kaggle_5xx_and_drops_are_retried_and_a_new_version_is_downloaded(pipeline_env, kaggle_server):
    kaggle_server.fail_next(503, count=2, path_contains="GetDataset")
    kaggle_server.drop_next(1)
    result = run_daily_etl()
    assert result.success
    assert kaggle_server.count_requests("GetDataset") == 4
    assert materialization(result, "kaggle_dataset")["version"] == "1"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("customers-1000.csv", SAMPLE_CSV.read_bytes().replace(b"Berlin", b"Bremen"))
    kaggle_server.bump_version("datablist", "customers", zip_bytes=archive.getvalue())
    second = run_daily_etl()
    assert materialization(second, "kaggle_dataset")["downloaded"] is True
    assert materialization(second, "contacts_table")["updated"] > 0
    assert kaggle_server.downloads == 2


@pytest.mark.parametrize(
    ("url", "expected", "secret"),
    [
        # a refused login: permanent, so no step retry (a server that is down is transient: test_failure_rule.py)
        (
            sa.make_url(MARIADB_ADMIN_URL)
            .set(username="etl_nobody", password="s3cr3t-pw", database="etl")
            .render_as_string(hide_password=False),
            "cannot connect to the database mysql+pymysql://etl_nobody:***@",
            "s3cr3t-pw",
        ),
        ("mysql+pymysql//etl:S3cretPW@db/etl", "ETL_DATABASE_URL is not a SQLAlchemy URL", "S3cretPW"),
        ("etl:S3cretPW@db/etl", "ETL_DATABASE_URL is not a SQLAlchemy URL", "S3cretPW"),
        (
            "postgresql+nodriver://u:hunter2@db/x",
            "names a driver that is not installed (postgresql+nodriver)",
            "hunter2",
        ),
    ],
)
def test_bad_database_url_fails_naming_host_or_driver_with_password_masked(
    clean_env, monkeypatch, url, expected, secret
):
    monkeypatch.setenv("ETL_DATABASE_URL", url)
    monkeypatch.setenv("ETL_RETRY_ATTEMPTS", "2")
    result = run_daily_etl()
    assert not result.success
    message = failure_message(result)
    assert expected in message
    if secret:
        assert secret not in message


def test_missing_custom_properties_fail_by_name_when_creating_is_off(pipeline_env, hubspot_server, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CREATE_PROPERTIES", "false")
    result = run_daily_etl()
    assert not result.success
    message = failure_message(result)
    for name, field in (("source_customer_id", "customer_id"), ("subscription_date", "subscription_date")):
        assert (
            f"HubSpot property '{name}' (field '{field}') does not exist; create it or set "
            "HUBSPOT_CREATE_PROPERTIES=true"
        ) in message
    assert hubspot_server.count_requests("/batch/") == 0
