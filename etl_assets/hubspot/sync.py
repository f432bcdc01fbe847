"""The sync itself: contacts in, HubSpot upserts out, one outcome per contact.

Pure logic around an injected API object, so it is tested against the local server and
reasoned about without one. A batch HubSpot rejects for its data is halved until the bad
records are isolated, so every good record still goes through (one invalid email would
otherwise sink 99 good contacts). A batch refused for a property (unknown, read-only, or of a
type no contact's value fits) is not split, since every half would fail alike: the sync stops
naming the property. Isolation is bounded per run by MAX_ISOLATION_REQUESTS.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import datetime as dt
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import EMAIL_PATTERN, HASH_COLUMN, MAX_EMAIL_LENGTH
from etl_assets.errors import PermanentError
from etl_assets.hubspot.errors import HubSpotApiError, HubSpotError, refused_property
from etl_assets.hubspot.ratelimit import DailyLimitReached
from etl_assets.progress import Progress

MAX_BATCH = 100  # HubSpot's limit on inputs per batch request
# Requests a run may spend isolating refused records (2 per split). One bad record among 100
# costs 14 (7 halvings), so 500 isolates ~35 scattered bad records a run (more when they cluster)
# for 0.2% of HubSpot's 250,000 daily requests; past it the contacts of refused batches stay
# pending for the next run instead of failing, and the run says so.
MAX_ISOLATION_REQUESTS = 500
_EMAIL = re.compile(EMAIL_PATTERN)


class ContactsApi(Protocol):
    def upsert_contacts(self, inputs: list[dict]) -> list[dict]: ...


@dataclass(frozen=True)
class ContactOutcome:
    email: str
    content_hash: str
    outcome: str  # created | updated | failed
    hubspot_id: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    transient: bool = False


@dataclass
class SyncReport:
    due: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    pending: int = 0
    batches: int = 0
    split_batches: int = 0
    isolation_requests: int = 0
    unisolated: int = 0  # contacts of refused batches left pending once the isolation cap was reached
    stopped_reason: str | None = None
    failure_reasons: collections.Counter = field(default_factory=collections.Counter)
    _split_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve_split(self, size: int) -> bool:
        """Whether a refused batch of `size` may be halved (2 requests) within the isolation cap.

        Called from the sender threads, hence the lock.
        """
        with self._split_lock:
            if self.isolation_requests + 2 > MAX_ISOLATION_REQUESTS:
                self.unisolated += size
                return False
            self.split_batches += 1
            self.isolation_requests += 2
            return True

    def add(self, outcomes: Iterable[ContactOutcome]) -> None:
        for item in outcomes:
            if item.outcome == "failed":
                self.failed += 1
                self.failure_reasons[item.error_category or "UNKNOWN"] += 1
            elif item.outcome == "created":
                self.created += 1
            else:
                self.updated += 1


def contact_properties(row: dict, column_map: ColumnMap) -> dict[str, str]:
    """The HubSpot properties for one contact row; empty values are left out, not blanked."""
    properties = {}
    for spec in column_map.hubspot_fields:
        value = row.get(spec.field)
        if value is None or value == "":
            continue
        properties[spec.hubspot] = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    return properties


def upsert_input(row: dict, column_map: ColumnMap) -> dict:
    return {"idProperty": "email", "id": row[EMAIL_FIELD], "properties": contact_properties(row, column_map)}


def prevalidate(rows: list[dict], known_properties: set[str] | None, column_map: ColumnMap
                ) -> tuple[list[dict], list[ContactOutcome]]:
    """Drop, with a reason, what HubSpot would reject anyway, before it costs a request."""
    accepted, rejected, seen = [], [], set()
    unknown = sorted({spec.hubspot for spec in column_map.hubspot_fields} - known_properties) if known_properties else []
    for row in rows:
        email = row[EMAIL_FIELD]
        reason = None
        if not email or len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
            reason = ("INVALID_EMAIL", f"Email address {email!r} is invalid")
        elif email in seen:
            reason = ("DUPLICATE_EMAIL", f"{email} appears twice in one sync")
        elif unknown:
            reason = ("PROPERTY_DOESNT_EXIST", f"properties missing in HubSpot: {unknown}")
        if reason:
            rejected.append(ContactOutcome(email, row[HASH_COLUMN], "failed", error_category=reason[0],
                                           error_message=reason[1]))
        else:
            seen.add(email)
            accepted.append(row)
    return accepted, rejected


def batched(rows: Iterable[dict], size: int = MAX_BATCH) -> Iterator[list[dict]]:
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _failed(row: dict, error: HubSpotError) -> ContactOutcome:
    return ContactOutcome(row[EMAIL_FIELD], row[HASH_COLUMN], "failed",
                          error_category=error.category, error_message=error.message[:2000])


def upsert_isolating(api: ContactsApi, batch: list[dict], column_map: ColumnMap, report: SyncReport,
                     whole: bool = True) -> list[ContactOutcome]:
    """Upsert `batch`; on a data error, halve it until the rejected records stand alone.

    A refused property stops the sync (PermanentError), judged on the `whole` batch only: a half
    whose few contacts all fail alike says nothing about the property. Past the isolation cap a
    refused batch's contacts get no outcome: they stay pending.
    """
    try:
        results = api.upsert_contacts([upsert_input(row, column_map) for row in batch])
    except HubSpotApiError as exc:
        if not exc.error.is_data_error:
            raise
        refused = refused_property(exc.error, len(batch)) if whole else None
        if refused:
            raise PermanentError(
                f"HubSpot refuses property {refused[0]!r} for every contact ({refused[1]}): remove it from "
                "the column map or map another property") from None
        if len(batch) == 1:
            return [_failed(batch[0], exc.error)]
        if not report.reserve_split(len(batch)):
            return []
        middle = len(batch) // 2
        return (upsert_isolating(api, batch[:middle], column_map, report, whole=False)
                + upsert_isolating(api, batch[middle:], column_map, report, whole=False))
    by_email = {str((result.get("properties") or {}).get("email", "")).lower(): result for result in results}
    outcomes = []
    for row in batch:
        result = by_email.get(row[EMAIL_FIELD])
        if result is None:
            outcomes.append(ContactOutcome(row[EMAIL_FIELD], row[HASH_COLUMN], "failed", error_category="NO_RESULT",
                                           error_message="HubSpot answered without a result for this contact",
                                           transient=True))
        else:
            outcomes.append(ContactOutcome(row[EMAIL_FIELD], row[HASH_COLUMN],
                                           "created" if result.get("new") else "updated", hubspot_id=str(result["id"])))
    return outcomes


def sync_contacts(
    api: ContactsApi,
    rows: Iterable[dict],
    column_map: ColumnMap,
    record: Callable[[list[ContactOutcome]], None],
    report: SyncReport,
    log: logging.Logger,
    max_in_flight: int = 4,
    batch_size: int = MAX_BATCH,
) -> SyncReport:
    """Send every row, `max_in_flight` batches at a time; `record` runs in this thread per batch.

    A DAILY rate limit stops the sync cleanly: batches in flight finish and are recorded, the
    rest stays pending for the next run. Any other error stops it the same way, then re-raises.
    """
    progress = Progress(log, "hubspot_contacts", "contacts", report.due)
    stop_error: BaseException | None = None
    with futures.ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="hubspot") as pool:
        in_flight: dict[futures.Future, list[dict]] = {}

        def collect(done: Iterable[futures.Future]) -> None:
            nonlocal stop_error
            for future in done:
                batch = in_flight.pop(future)
                try:
                    outcomes = future.result()
                except DailyLimitReached as exc:
                    report.stopped_reason = f"HubSpot daily limit reached: {exc}"
                    stop_error = stop_error or exc
                    continue
                except BaseException as exc:  # noqa: BLE001 - re-raised after in-flight batches are recorded
                    stop_error = stop_error or exc
                    continue
                record(outcomes)
                report.add(outcomes)
                progress.add(len(batch))

        for batch in batched(rows, batch_size):
            if stop_error is not None:
                break
            report.batches += 1
            in_flight[pool.submit(upsert_isolating, api, batch, column_map, report)] = batch
            if len(in_flight) >= max_in_flight:
                collect(futures.wait(in_flight, return_when=futures.FIRST_COMPLETED).done)
        collect(futures.wait(in_flight).done)

    report.pending = report.due - report.created - report.updated - report.failed
    log.info(progress.line())
    if stop_error is not None and not isinstance(stop_error, DailyLimitReached):
        raise stop_error
    return report
