"""HUBSPOT_ON_REMOVED end to end: contacts that left the source kept or archived, within the guard.

The embedded sample (988 contacts) on MariaDB and the local HubSpot server. A contact leaves the
source as the loader removes it: its row goes from `contacts`.
"""

import json
from pathlib import Path

import sqlalchemy as sa

from etl_assets_tests.assets.test_assets import failure_message, materialization, run_daily_etl
from etl_assets_tests.assets.test_hubspot_sync_modes import SAMPLE, SYNC_ONLY, create_elsewhere, load, states, sync
from etl_assets_tests.servers.hubspot_server import ARCHIVE_PATH, HubSpotServer


def synced_sample(server: HubSpotServer, mariadb_url: str) -> list[str]:
    emails = load(mariadb_url)
    metadata, _ = sync(server)
    assert metadata["created"] == SAMPLE
    return emails


def leave_source(mariadb_url: str, emails: list[str]) -> None:
    with sa.create_engine(mariadb_url).begin() as conn:
        conn.execute(
            sa.text("DELETE FROM contacts WHERE email IN :emails").bindparams(sa.bindparam("emails", expanding=True)),
            {"emails": emails},
        )


def test_keep_marks_the_contacts_that_left_once_and_sends_nothing(hubspot_env, mariadb_url):
    emails = synced_sample(hubspot_env, mariadb_url)
    leave_source(mariadb_url, emails[:5])
    metadata, requests = sync(hubspot_env)
    assert (metadata["on_removed"], metadata["removed"], metadata["removed_before"]) == ("keep", 5, 0)
    assert hubspot_env.count_requests() == 0  # nothing due, nothing sent
    assert len(hubspot_env.contacts_snapshot()) == SAMPLE
    assert states(mariadb_url) == {("synced", None): SAMPLE - 5, ("removed", None): 5}

    metadata, _ = sync(hubspot_env)
    assert (metadata["removed"], metadata["removed_before"]) == (0, 5)


def test_archive_takes_only_contacts_this_sync_wrote_and_a_rerun_sends_nothing(hubspot_env, mariadb_url, monkeypatch):
    emails = load(mariadb_url)
    theirs = emails[0]
    create_elsewhere(hubspot_env, [theirs])  # in HubSpot before us: create_only leaves it to its owner
    monkeypatch.setenv("HUBSPOT_SYNC_MODE", "create_only")
    metadata, _ = sync(hubspot_env)
    assert (metadata["created"], metadata["skipped"]) == (SAMPLE - 1, 1)

    gone = emails[:60]  # 59 ours and theirs: 59 of 987 ours, 6%
    ids = {email: hubspot_env.contact_by_email(email)["id"] for email in gone}
    leave_source(mariadb_url, gone)
    monkeypatch.setenv("HUBSPOT_ON_REMOVED", "archive")
    metadata, requests = sync(hubspot_env)
    assert (metadata["archived"], metadata["removed"], metadata["archive_already_gone"]) == (59, 1, 0)
    assert requests == {"archive": 1}
    assert set(hubspot_env.archived_contacts) == {ids[email] for email in gone[1:]}
    assert hubspot_env.contact_by_email(theirs) is not None  # not ours: kept, marked removed
    assert states(mariadb_url) == {
        ("synced", None): SAMPLE - 60,
        ("archived", None): 59,
        ("removed", "EXISTS_IN_HUBSPOT"): 1,
    }
    assert f"| {gone[1]} | {ids[gone[1]]} |" in metadata["archive_preview"]

    hubspot_env.reset_log()
    assert run_daily_etl(asset_selection=SYNC_ONLY).success
    assert hubspot_env.count_requests() == 0  # a rerun after the archive makes no request at all


def test_the_guard_refuses_archiving_half_before_any_request(hubspot_env, mariadb_url, monkeypatch):
    emails = synced_sample(hubspot_env, mariadb_url)
    leave_source(mariadb_url, emails[: SAMPLE // 2])
    monkeypatch.setenv("HUBSPOT_ON_REMOVED", "archive")
    hubspot_env.reset_log()
    result = run_daily_etl(asset_selection=SYNC_ONLY)
    assert not result.success
    message = failure_message(result)
    assert "refusing to archive 494 of the 988 HubSpot contacts this sync wrote (50%)" in message
    assert "HUBSPOT_MAX_ARCHIVE_FRACTION=0.1" in message
    assert hubspot_env.count_requests() == 0 and len(hubspot_env.contacts_snapshot()) == SAMPLE
    assert states(mariadb_url) == {("synced", None): SAMPLE}  # nothing marked either

    monkeypatch.setenv("HUBSPOT_MAX_ARCHIVE_FRACTION", "0.5")  # the override, for one run
    metadata, requests = sync(hubspot_env)
    assert metadata["archived"] == 494 and requests == {"archive": 5}


def test_the_guard_never_archives_on_an_empty_source(hubspot_env, mariadb_url, monkeypatch):
    emails = synced_sample(hubspot_env, mariadb_url)
    leave_source(mariadb_url, emails)
    monkeypatch.setenv("HUBSPOT_ON_REMOVED", "archive")
    monkeypatch.setenv("HUBSPOT_MAX_ARCHIVE_FRACTION", "1")  # not even with the override
    hubspot_env.reset_log()
    result = run_daily_etl(asset_selection=SYNC_ONLY)
    assert not result.success
    assert "refusing to archive 988 HubSpot contacts: the source is empty" in failure_message(result)
    assert hubspot_env.count_requests() == 0


def test_a_dry_run_lists_exactly_which_would_be_archived(hubspot_env, mariadb_url, monkeypatch):
    emails = synced_sample(hubspot_env, mariadb_url)
    gone = emails[100:120]
    ids = {email: hubspot_env.contact_by_email(email)["id"] for email in gone}
    leave_source(mariadb_url, gone)
    monkeypatch.setenv("HUBSPOT_ON_REMOVED", "archive")
    monkeypatch.setenv("HUBSPOT_DRY_RUN", "true")
    hubspot_env.reset_log()
    result = run_daily_etl(asset_selection=SYNC_ONLY)
    assert result.success
    metadata = materialization(result, "hubspot_contacts")
    assert (metadata["would_archive"], metadata["would_send_contacts"]) == (20, 0)
    preview = metadata["archive_preview"].splitlines()[2:]
    assert preview == [f"| {email} | {ids[email]} |" for email in gone]
    lines = [json.loads(line) for line in Path(metadata["outbox"]).read_text().splitlines()]
    assert lines == [{"method": "POST", "path": ARCHIVE_PATH, "body": {"inputs": [{"id": ids[e]} for e in gone]}}]
    assert hubspot_env.count_requests() == 0 and not hubspot_env.archived_contacts
    assert states(mariadb_url) == {("synced", None): SAMPLE}  # a dry run marks nothing
