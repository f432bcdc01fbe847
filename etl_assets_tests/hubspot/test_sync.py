"""The sync against the local HubSpot server, through the real hubspot-api-client."""

import _thread
import logging
import signal
import threading
import time

import pytest

from etl_assets.contacts.mapping import load_column_map
from etl_assets.hubspot.client import HubSpotApi, HubSpotApiError
from etl_assets.hubspot.properties import PropertyWriter
from etl_assets.hubspot.ratelimit import RollingWindowLimiter
from etl_assets.hubspot.sync import SyncReport, batched, prevalidate, sync_contacts
from etl_assets.retrying import RetrySettings
from etl_assets_tests.servers.hubspot_server import HubSpotServer

COLUMN_MAP = load_column_map(None)
LOG = logging.getLogger("test_sync")
RETRY = RetrySettings(attempts=8, max_seconds=120, initial_delay=0.05, max_delay=1)


def contact(i: int, email: str | None = None) -> dict:
    return {
        "email": email or f"person{i}@example.com",
        "first_name": f"P{i}",
        "last_name": "Test",
        "company": None,
        "city": "Berlin",
        "country": None,
        "phone_1": None,
        "phone_2": None,
        "customer_id": f"C{i}",
        "subscription_date": "2021-01-01",
        "website": None,
        "content_hash": f"{i:032x}",
    }


def api_for(server: HubSpotServer, rate_limit: int = 100, token: str | None = None) -> HubSpotApi:
    limiter = RollingWindowLimiter(max_requests=rate_limit, interval_s=server.interval_ms / 1000)
    return HubSpotApi(token or server.token, server.url, limiter, RETRY, LOG)


def pending(rows: list[dict], column_map=COLUMN_MAP):
    """The rows as the sync sends them (every test row is valid here)."""
    accepted, refused = prevalidate(rows, PropertyWriter(column_map))
    assert not refused
    return accepted


def run_sync(api: HubSpotApi, rows: list[dict], max_in_flight: int = 4):
    recorded = []
    report = SyncReport(due=len(rows))
    sync_contacts(api, pending(rows), recorded.extend, report, LOG, max_in_flight=max_in_flight)
    return report, {item.email: item for item in recorded}


def test_batches_hold_at_most_100():
    sizes = [len(batch) for batch in batched(range(250))]
    assert sizes == [100, 100, 50]
    with pytest.raises(ValueError):
        list(batched([1], 101))


def test_prevalidation_catches_bad_emails_duplicates_and_values_the_property_type_refuses():
    rows = [contact(1), contact(2, "not-an-email"), contact(1), {**contact(3), "subscription_date": "03/04/2021"}]
    accepted, refused = prevalidate(rows, PropertyWriter(COLUMN_MAP))
    assert [item.email for item in accepted] == ["person1@example.com"]
    assert accepted[0].properties["subscription_date"] == "2021-01-01"
    assert [item.error_category for item in refused] == ["INVALID_EMAIL", "DUPLICATE_EMAIL", "INVALID_DATE"]
    assert refused[2].error_message == "subscription_date (date): '03/04/2021' is not a date (YYYY-MM-DD)"


def test_rejected_records_are_isolated_and_every_good_one_arrives():
    # Syntactically fine, but HubSpot refuses special-use domains: only HubSpot can tell.
    bad = {17: "alice@mail.invalid", 160: "bob@host.localhost", 161: "carol@box.test"}
    rows = [contact(i, bad.get(i)) for i in range(250)]
    with HubSpotServer(existing_properties=["source_customer_id", "subscription_date"]) as server:
        report, outcomes = run_sync(api_for(server), rows)
        stored = server.contacts_snapshot()
        upserts = server.count_requests("/batch/upsert")
    assert set(stored) == {row["email"] for row in rows} - set(bad.values())
    assert report.created == 247 and report.failed == 3 and report.split_batches > 0
    assert upserts == report.batches + report.isolation_requests == 3 + 2 * report.split_batches
    print(f"isolating 3 bad of 250: {upserts} upserts")
    for email in bad.values():
        assert outcomes[email].outcome == "failed"
        assert outcomes[email].error_category == "VALIDATION_ERROR"
        assert "INVALID_EMAIL" in outcomes[email].error_message
    assert outcomes["person0@example.com"].hubspot_id == stored["person0@example.com"]["id"]


def test_updates_are_told_from_creates():
    with HubSpotServer(existing_properties=["source_customer_id", "subscription_date"]) as server:
        api = api_for(server)
        run_sync(api, [contact(1)])
        report, outcomes = run_sync(api, [contact(1), contact(2)])
    assert (report.created, report.updated) == (1, 1)
    assert outcomes["person1@example.com"].outcome == "updated"


def test_a_rejected_token_is_an_auth_error_not_a_retry():
    with HubSpotServer() as server:
        api = api_for(server, token="wrong-token")
        with pytest.raises(HubSpotApiError) as error:
            run_sync(api, [contact(1)])
        assert error.value.error.is_auth_error and error.value.error.category == "INVALID_AUTHENTICATION"
        assert server.count_requests() == 1


def test_daily_limit_stops_cleanly_with_the_rest_pending():
    rows = [contact(i) for i in range(1000)]
    with HubSpotServer(existing_properties=["source_customer_id", "subscription_date"], daily_limit=3) as server:
        report, outcomes = run_sync(api_for(server), rows, max_in_flight=1)
        assert server.count_status(429) == 1  # no retries burnt on a DAILY 429
    assert report.created == 300
    assert report.pending == 700 and "daily limit" in report.stopped_reason
    assert len(outcomes) == 300


def test_chaos_10k_contacts_arrive_exactly_once_within_the_rate_limit():
    """20% 5xx, dropped connections, 429 bursts with and without Retry-After."""
    rows = [contact(i) for i in range(10_000)]
    with HubSpotServer(
        existing_properties=["source_customer_id", "subscription_date"],
        error_rate=0.2,
        drop_rate=0.05,
        seed=42,
        latency=0.01,
    ) as server:
        server.script_429(3)  # no Retry-After: wait out the window
        api = api_for(server)
        started = time.monotonic()
        report, outcomes = run_sync(api, rows[:5_000])
        server.script_429(2, retry_after=1)
        second, more = run_sync(api, rows[5_000:])
        elapsed = time.monotonic() - started
        stored = server.contacts_snapshot()
        first_429 = server.first_429_time()
        busiest = server.max_requests_in_window(since=first_429)
        drops = sum(1 for record in server.request_log if record.dropped)
        errors = sum(1 for record in server.request_log if record.status and record.status >= 500)
    assert set(stored) == {row["email"] for row in rows}
    assert len({record["id"] for record in stored.values()}) == 10_000
    assert report.created + second.created + report.updated + second.updated == 10_000
    assert report.failed == second.failed == 0
    assert first_429 is not None and drops > 0 and errors > 0
    assert busiest <= 100, f"{busiest} requests in one 10 s window after the first 429"
    print(f"chaos: {elapsed:.1f}s, {api.calls} calls, {errors} 5xx, {drops} drops, busiest window {busiest}")


def test_an_interrupted_sync_records_every_batch_hubspot_accepted_and_sends_no_more():
    """A run terminated mid-sync (Dagster raises its interrupt in this thread): the batches in flight
    finish and are recorded, so the next run sends none of them again; queued ones stay unsent."""
    rows = pending([contact(i) for i in range(2000)])

    def interrupted_after(count: int):
        for number, row in enumerate(rows):
            if number == count:
                raise KeyboardInterrupt  # as the run worker's signal handler does
            yield row

    recorded: list = []
    with HubSpotServer(existing_properties=["source_customer_id", "subscription_date"], latency=0.3) as server:
        with pytest.raises(KeyboardInterrupt):
            sync_contacts(api_for(server), interrupted_after(1200), recorded.extend, SyncReport(due=2000), LOG)
        accepted = set(server.contacts_snapshot())
    assert accepted and {outcome.email for outcome in recorded} == accepted
    assert len(accepted) <= 1200 and all(outcome.outcome == "created" for outcome in recorded)


@pytest.fixture
def interruptible():
    """SIGINT raises KeyboardInterrupt, as Dagster's step worker installs its own handler. Without it
    the test would depend on how pytest was started: a shell's background job inherits SIGINT
    ignored, and `_thread.interrupt_main` then does nothing."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


@pytest.mark.usefixtures("interruptible")
@pytest.mark.parametrize("after_s", [0.0, 0.4, 0.8, 1.3])
def test_a_termination_at_any_point_records_exactly_what_hubspot_accepted(after_s):
    """Dagster terminates a step by interrupting its main thread (`_thread.interrupt_main`), which may
    be waiting for answers, recording, or past the last batch: whatever HubSpot accepted is recorded.
    Ten batches at 1 s a request, four at a time: the interrupt lands between 1 s and 2.3 s."""
    rows = pending([contact(i) for i in range(988)])
    recorded: list = []
    syncing = threading.Event()
    with HubSpotServer(existing_properties=["source_customer_id", "subscription_date"], latency=1.0) as server:

        def terminate() -> None:
            while len(server.contacts_snapshot()) < 400:
                time.sleep(0.02)
            time.sleep(after_s)
            if syncing.is_set():  # never into the test itself
                _thread.interrupt_main()

        threading.Thread(target=terminate, daemon=True).start()
        syncing.set()
        with pytest.raises(KeyboardInterrupt):
            try:
                sync_contacts(api_for(server), iter(rows), recorded.extend, SyncReport(due=988), LOG, max_in_flight=4)
            finally:
                syncing.clear()
        time.sleep(1.2)  # a request the server still held is applied when it wakes
        accepted = set(server.contacts_snapshot())
    assert {outcome.email for outcome in recorded} == accepted
