"""The company sync's logic against an in-process stand-in: what is due, moves, refusals, the shared window."""

import pytest

from etl_assets.hubspot.companies_keys import Company
from etl_assets.hubspot.companies_sync import (
    Report,
    Wanted,
    due_associations,
    due_companies,
    sync_associations,
    sync_companies,
)
from etl_assets.hubspot.errors import HubSpotApiError, HubSpotError
from etl_assets.hubspot.ratelimit import RollingWindowLimiter
from etl_assets.hubspot.sync import UpsertAnswer

pytestmark = pytest.mark.fast


class FakeApi:
    def __init__(self):
        self.calls: list[tuple[str, list]] = []
        self.refuse: str | None = None  # a call name HubSpot refuses as a whole (400)

    def _seen(self, name, inputs):
        self.calls.append((name, inputs))
        if self.refuse == name:
            raise HubSpotApiError(HubSpotError(400, "VALIDATION_ERROR", "refused"))

    def create_companies(self, inputs):
        self._seen("create", inputs)
        # no trace id echoed: matched by the properties sent
        return UpsertAnswer(results=[{"id": f"c{t}", "properties": dict(p)} for t, p in reversed(inputs)])

    def update_companies(self, inputs):
        self._seen("update", inputs)
        known = [i for i, _ in inputs if i != "gone"]
        errors = [{"category": "OBJECT_NOT_FOUND", "message": "no", "context": {"ids": ["gone"]}}]
        return UpsertAnswer(results=[{"id": i} for i in known], errors=errors if len(known) < len(inputs) else [])

    def associate(self, pairs):
        self._seen("associate", pairs)
        return UpsertAnswer(results=[{"from_object_id": c, "to_object_id": o} for c, o in pairs])

    def dissociate(self, pairs):
        self._seen("archive", pairs)


ACME, GLOBEX = Company("domain:acme.com", "Acme", "acme.com"), Company("name:globex", "Globex", None)


def state(company: Company, **changes) -> dict:
    row = {
        "hubspot_id": "1",
        "status": "synced",
        "synced_hash": company.content_hash,
        "attempted_hash": company.content_hash,
        "error_transient": False,
    }
    return {**row, **changes}


def test_only_new_and_changed_companies_are_due():
    renamed = Company(ACME.key, "Acme Holdings", "acme.com")
    work = due_companies({ACME.key: renamed, GLOBEX.key: GLOBEX}, {ACME.key: state(ACME)})
    assert (work.to_create, work.to_update, work.unchanged) == ([GLOBEX], [("1", renamed)], 0)
    assert due_companies({ACME.key: ACME}, {ACME.key: state(ACME)}).unchanged == 1
    refused = state(ACME, status="failed", hubspot_id=None)
    assert due_companies({ACME.key: ACME}, {ACME.key: refused}).unchanged == 1  # waits for a change
    assert due_companies({ACME.key: ACME}, {ACME.key: {**refused, "error_transient": True}}).to_create == [ACME]


def test_created_companies_are_matched_and_a_company_hubspot_lost_is_created_again():
    api, recorded, report = FakeApi(), [], Report()
    work = due_companies({ACME.key: ACME, GLOBEX.key: GLOBEX}, {})
    sync_companies(api, work, recorded.extend, report)
    assert {row["company_key"]: row["hubspot_id"] for row in recorded} == {ACME.key: "c0", GLOBEX.key: "c1"}
    lost = due_companies(
        {ACME.key: Company(ACME.key, "Acme 2", "acme.com")}, {ACME.key: state(ACME, hubspot_id="gone")}
    )
    recorded.clear()
    sync_companies(api, lost, recorded.extend, report)
    assert recorded[0]["outcome"] == "failed" and recorded[0]["hubspot_id"] is None  # next run creates it
    assert recorded[0]["error_transient"]


def test_a_batch_refused_as_a_whole_fails_its_companies_which_then_wait():
    api, recorded, report = FakeApi(), [], Report()
    api.refuse = "create"
    sync_companies(api, due_companies({ACME.key: ACME}, {}), recorded.extend, report)
    assert recorded[0]["outcome"] == "failed" and not recorded[0]["error_transient"]
    assert report.failure_reasons == {"VALIDATION_ERROR": 1}


def held(email, contact_id, company_id, key, **changes) -> dict:
    row = {"email": email, "contact_id": contact_id, "company_id": company_id, "company_key": key}
    return {**row, "status": "associated", "attempted": None, "error_transient": False, **changes}


def test_a_moved_contact_loses_only_the_pair_this_sync_made_then_gets_the_new_one():
    wanted = {
        "a@x.com": Wanted("a@x.com", "domain:new.com", "7", "200"),  # moved
        "b@x.com": Wanted("b@x.com", "domain:acme.com", "8", "100"),  # unchanged
        "c@x.com": None,  # lost its company
        "d@x.com": Wanted("d@x.com", "domain:acme.com", "9", "100"),  # new
    }
    states = {
        "a@x.com": held("a@x.com", "7", "100", "domain:acme.com"),
        "b@x.com": held("b@x.com", "8", "100", "domain:acme.com"),
        "c@x.com": held("c@x.com", "6", "100", "domain:acme.com"),
    }
    work = due_associations(wanted, states)
    assert work.unchanged == 1
    api, recorded, report = FakeApi(), [], Report()
    sync_associations(api, work, wanted, recorded.extend, report)
    assert api.calls == [("archive", [("7", "100"), ("6", "100")]), ("associate", [("7", "200"), ("9", "100")])]
    assert report.outcomes == {"archived": 2, "associated": 2}
    after = dict(states)
    for row in recorded:  # as the asset records them: a contact without a company loses its row
        if row["outcome"] == "archived" and wanted[row["email"]] is None:
            after.pop(row["email"])
        else:
            after[row["email"]] = {**row, "status": row["outcome"]}
    rerun = due_associations(wanted, after)
    assert (rerun.to_archive, rerun.to_create, rerun.unchanged) == ([], [], 3)


def test_a_refused_archive_keeps_the_old_pair_and_sends_no_new_one():
    wanted = {"a@x.com": Wanted("a@x.com", "domain:new.com", "7", "200")}
    states = {"a@x.com": held("a@x.com", "7", "100", "domain:acme.com")}
    api, recorded, report = FakeApi(), [], Report()
    api.refuse = "archive"
    sync_associations(api, due_associations(wanted, states), wanted, recorded.extend, report)
    assert [name for name, _ in api.calls] == ["archive"]
    [row] = recorded
    assert (row["contact_id"], row["company_id"], row["company_key"], row["outcome"]) == (
        "7",
        "100",
        "domain:acme.com",
        "failed",
    )
    waiting = {"a@x.com": {**row, "status": "failed"}}
    assert due_associations(wanted, waiting).unchanged == 1  # refused for its data: waits for a change


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_limiter_attached_to_the_shared_file_waits_for_the_replies_of_the_step_before(tmp_path):
    path, wall = tmp_path / "window", Clock(1_000.0)
    before = RollingWindowLimiter(max_requests=3, interval_s=10, clock=Clock(5.0), sleep=lambda s: None, wall=wall)
    before.persist_to(path)
    for _ in range(3):
        with before.slot():
            pass
    assert len(path.read_text().split()) == 3
    assert path.stat().st_mode & 0o777 == 0o600

    wall.now += 2.0  # the next step starts 2 s later, in another process with its own monotonic clock
    clock, slept = Clock(50.0), []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    after = RollingWindowLimiter(max_requests=3, interval_s=10, clock=clock, sleep=sleep, wall=wall)
    after.persist_to(path)
    after.persist_to(path)  # attaching twice changes nothing
    with after.slot():
        pass
    assert sum(slept) == pytest.approx(8.1)  # until the first of the three leaves the window (10 s + margin)
    assert len(path.read_text().split()) == 4

    wall.now += 60  # a window later nothing of it is left
    fresh = RollingWindowLimiter(max_requests=3, interval_s=10, clock=Clock(0.0), sleep=lambda s: None, wall=wall)
    fresh.persist_to(path)
    assert path.read_text() == ""
