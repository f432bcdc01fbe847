"""Sync modes and removals as plain decisions: planning, the archive guard, settings, the outbox.

No server, no database: the HubSpot side is a recording stand-in where one is needed.
"""

import json

import pytest

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot import modes, removals, writers
from etl_assets.hubspot.errors import HubSpotApiError, HubSpotError, existing_id
from etl_assets.hubspot.outbox import write_outbox
from etl_assets.hubspot.removals import Leaving, check_archive, plan_removals
from etl_assets.hubspot.sync import Pending

pytestmark = pytest.mark.fast


def pending(i: int, hubspot_id: str | None = None) -> Pending:
    email = f"p{i}@example.com"
    return Pending(email, f"{i:032x}", {"email": email, "firstname": f"P{i}"}, hubspot_id)


@pytest.mark.parametrize(
    ("mode", "write", "look_up", "skipped"),
    [
        (modes.UPSERT, ["p1", "p2"], [], []),
        (modes.UPDATE_ONLY, ["p1"], ["p2"], []),
        (modes.CREATE_ONLY, ["p2"], [], ["p1"]),
    ],
)
def test_each_mode_plans_a_batch_by_what_is_known_of_each_contact(mode, write, look_up, skipped):
    plan = modes.plan_batch(mode, [pending(1, "101"), pending(2)])
    assert [c.email.split("@")[0] for c in plan.write] == write
    assert [c.email.split("@")[0] for c in plan.look_up] == look_up
    assert [o.email.split("@")[0] for o in plan.skipped] == skipped
    for outcome in plan.skipped:  # create_only: the id HubSpot gave it says it exists
        assert (outcome.outcome, outcome.skip_reason, outcome.hubspot_id) == ("skipped", "EXISTS_IN_HUBSPOT", "101")


@pytest.mark.parametrize(
    ("name", "choices", "read"),
    [
        (settings.HUBSPOT_SYNC_MODE, "upsert, update_only, create_only", modes.sync_mode),
        (settings.HUBSPOT_ON_REMOVED, "keep, archive", removals.on_removed),
    ],
)
def test_an_unknown_choice_names_the_variable_the_value_and_the_choices(monkeypatch, name, choices, read):
    monkeypatch.setenv(name, "Sometimes")
    with pytest.raises(PermanentError) as error:
        read()
    assert str(error.value) == f"{name} must be one of {choices}; got 'sometimes'"


def test_the_defaults_are_upsert_keep_and_a_tenth(monkeypatch):
    for name in (settings.HUBSPOT_SYNC_MODE, settings.HUBSPOT_ON_REMOVED, settings.HUBSPOT_MAX_ARCHIVE_FRACTION):
        monkeypatch.delenv(name, raising=False)
    assert (modes.sync_mode(), removals.on_removed(), removals.max_archive_fraction()) == ("upsert", "keep", 0.1)
    monkeypatch.setenv(settings.HUBSPOT_SYNC_MODE, " Update_Only ")
    assert modes.sync_mode() == "update_only"
    monkeypatch.setenv(settings.HUBSPOT_MAX_ARCHIVE_FRACTION, "1.5")
    with pytest.raises(PermanentError, match="HUBSPOT_MAX_ARCHIVE_FRACTION must be between 0 and 1, got 1.5"):
        removals.max_archive_fraction()


LEFT = [
    {"email": "created@x.com", "hubspot_id": "1", "status": "synced", "last_write": "created"},
    {"email": "kept@x.com", "hubspot_id": "2", "status": "removed", "last_write": "updated"},  # kept by an earlier run
    {"email": "merged@x.com", "hubspot_id": "3", "status": "synced", "last_write": "merged"},
    {"email": "skipped@x.com", "hubspot_id": "4", "status": "skipped", "last_write": None},
    {"email": "failed@x.com", "hubspot_id": None, "status": "failed", "last_write": None},
]


def test_keep_marks_every_contact_that_left_once():
    plan = plan_removals(LEFT, removals.KEEP)
    assert plan.archive == []
    assert plan.mark_removed == ["created@x.com", "merged@x.com", "skipped@x.com", "failed@x.com"]
    assert plan.already_removed == 1


def test_archive_takes_only_contacts_this_sync_created_or_last_wrote():
    plan = plan_removals(LEFT, removals.ARCHIVE)
    assert plan.archive == [Leaving("created@x.com", "1"), Leaving("kept@x.com", "2")]
    # merged: the record is another contact's; skipped or failed: never written by this sync
    assert plan.mark_removed == ["merged@x.com", "skipped@x.com", "failed@x.com"]


def test_the_guard_refuses_half_naming_the_setting_and_the_numbers():
    with pytest.raises(PermanentError) as error:
        check_archive(5, 10, source_contacts=5, last_load_valid=5, fraction=0.1)
    message = str(error.value)
    assert "refusing to archive 5 of the 10 HubSpot contacts this sync wrote (50%)" in message
    assert "HUBSPOT_MAX_ARCHIVE_FRACTION=0.1" in message and "nothing was archived" in message
    check_archive(1, 10, source_contacts=9, last_load_valid=9, fraction=0.1)  # 10%: allowed
    check_archive(5, 10, source_contacts=5, last_load_valid=5, fraction=0.5)  # raised for one run


@pytest.mark.parametrize(
    ("contacts", "valid", "words"), [(0, 100, "the source is empty"), (3, 0, "all rejected by validation")]
)
def test_the_guard_never_archives_on_an_empty_or_all_rejected_source(contacts, valid, words):
    with pytest.raises(PermanentError, match=words):
        check_archive(1, 1000, source_contacts=contacts, last_load_valid=valid, fraction=1.0)


def test_nothing_to_archive_passes_whatever_the_source():
    check_archive(0, 10, source_contacts=0, last_load_valid=0, fraction=0.0)


def test_the_outbox_holds_each_modes_requests_and_the_archives(tmp_path):
    contacts = [pending(i, str(100 + i) if i % 2 else None) for i in range(150)]
    lines = {}
    for mode in modes.SYNC_MODES:
        path = tmp_path / f"{mode}.jsonl"
        summary = write_outbox(path, contacts, mode=mode, archive=[Leaving("gone@x.com", "9")])
        lines[mode] = [json.loads(line) for line in path.read_text().splitlines()]
        assert summary.archived == 1
        assert lines[mode][-1] == {
            "method": "POST",
            "path": "/crm/v3/objects/contacts/batch/archive",
            "body": {"inputs": [{"id": "9"}]},
        }
    paths = {mode: [line["path"].rsplit("/", 1)[1] for line in found[:-1]] for mode, found in lines.items()}
    assert paths == {
        "upsert": ["upsert", "upsert"],
        "update_only": ["read", "update", "read", "update"],
        "create_only": ["create", "create"],
    }
    update = lines["update_only"][1]["body"]["inputs"][0]
    assert update == {"id": "101", "properties": {"firstname": "P1"}}  # by id, without the email
    read = lines["update_only"][0]["body"]
    assert read["idProperty"] == "email" and len(read["inputs"]) == 50
    create = lines["create_only"][0]["body"]["inputs"]
    assert len(create) == 50 and create[0]["objectWriteTraceId"] == "p0@example.com"


def test_a_conflict_names_the_existing_id():
    assert existing_id("Contact already exists. Existing ID: 37765128953") == "37765128953"
    assert existing_id("something else") is None


class ArchiveApi:
    """Archives by id; ids in `gone` are unknown, refused like the local server (whole batch, 404)."""

    def __init__(self, gone: set[str]):
        self.gone, self.requests = gone, []

    def archive_contacts(self, ids: list[str]) -> None:
        self.requests.append(list(ids))
        unknown = [i for i in ids if i in self.gone]
        if unknown:
            raise HubSpotApiError(HubSpotError(404, "OBJECT_NOT_FOUND", "gone", ids=tuple(unknown)))


def test_archiving_goes_100_ids_a_request_and_counts_ids_already_gone_apart():
    leaving = [Leaving(f"p{i}@x.com", str(i)) for i in range(250)]
    api, done = ArchiveApi(gone={"7"}), []
    archived, gone = writers.archive(api, leaving, done.extend)  # type: ignore[arg-type]
    assert (archived, gone) == (249, 1)
    assert [len(ids) for ids in api.requests] == [100, 99, 100, 50]
    assert sorted(done, key=lambda item: int(item.hubspot_id)) == leaving


def test_any_other_archive_error_stops():
    class NoScope(ArchiveApi):
        def archive_contacts(self, ids: list[str]) -> None:
            raise HubSpotApiError(HubSpotError(403, "MISSING_SCOPES", "no scope"))

    with pytest.raises(HubSpotApiError, match="MISSING_SCOPES"):
        writers.archive(NoScope(set()), [Leaving("a@x.com", "1")], lambda done: None)  # type: ignore[arg-type]


def test_the_preflight_reports_a_bad_mode_and_says_back_a_good_one(monkeypatch):
    from etl_assets import preflight

    monkeypatch.delenv(settings.HUBSPOT_SYNC_MODE, raising=False)
    monkeypatch.delenv(settings.HUBSPOT_MAX_ARCHIVE_FRACTION, raising=False)
    monkeypatch.setenv(settings.HUBSPOT_ON_REMOVED, "archive")
    [row] = preflight.guarded("HubSpot sync mode", lambda: [preflight.sync_mode_row()])
    assert (row.status, row.detail) == (
        preflight.OK,
        "upsert; contacts that left the source: archive, at most 0.1 of this sync's contacts a run",
    )
    monkeypatch.setenv(settings.HUBSPOT_SYNC_MODE, "upsrt")
    [row] = preflight.guarded("HubSpot sync mode", lambda: [preflight.sync_mode_row()])
    assert row.status == preflight.FAIL and row.detail.startswith("HUBSPOT_SYNC_MODE must be one of upsert,")
