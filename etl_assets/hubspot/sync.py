"""The sync itself: contacts in, HubSpot writes out, one outcome per contact.

Upserts by default; the other modes (hubspot/writers.py) plug in their own batch write through
`sync_contacts(send=...)` and reuse the isolation here (`write_isolating`). Pure logic around an
injected API object, so it is tested against the local server and reasoned about without one.
A batch HubSpot rejects for its data is halved until the bad records are isolated, so every
good record still goes through (one invalid email would otherwise sink 99 good contacts). A
batch refused for a property (unknown, read-only, or of a type no contact's value fits) is not
split, since every half would fail alike: the sync stops naming the property. Isolation is
bounded per run by MAX_ISOLATION_REQUESTS. Results are matched back by what HubSpot says (see
`match_answer`), not by their order.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from etl_assets import settings, streams
from etl_assets.contacts.mapping import EMAIL_FIELD
from etl_assets.contacts.records import EMAIL_PATTERN, HASH_COLUMN, MAX_EMAIL_LENGTH
from etl_assets.hubspot.errors import HubSpotApiError, HubSpotError, PropertyRefused, refused_property
from etl_assets.hubspot.properties import PropertyWriter, ValueRefused
from etl_assets.hubspot.ratelimit import DailyLimitReached
from etl_assets.logs.redaction import redact
from etl_assets.progress import Progress

MAX_BATCH = 100  # HubSpot's limit on inputs per batch request
# Requests a run may spend isolating refused records (2 per split) and re-sending contacts whose
# result could not be told apart (1 each). One bad record among 100 costs 14 (7 halvings), so
# 500 isolates ~35 scattered bad records a run (more when they cluster) for 0.2% of HubSpot's
# 250,000 daily requests; past it the contacts of refused batches stay pending for the next run
# instead of failing, and the run says so.
MAX_ISOLATION_REQUESTS = 500
# 207 error categories about the contact's own data: it waits for its data to change. Any other
# category (a limit, an internal error) is worth sending again next run.
DATA_ERROR_CATEGORIES = {"VALIDATION_ERROR", "CONFLICT"}
UNMATCHED = "UNMATCHED"
MAX_UNMATCHED_RUNS = 3  # runs that send a contact whose result could not be matched (hubspot/state.py)
HUBSPOT_ID_FIELD = "hubspot_id"  # due rows carry the id HubSpot gave the contact before, if any
T = TypeVar("T")
_EMAIL = re.compile(EMAIL_PATTERN)


@dataclass(frozen=True)
class Pending:
    """One contact to send: its key and content hash, the id HubSpot gave it before (if any), and
    its properties as HubSpot takes them."""

    email: str
    content_hash: str
    properties: dict[str, str]
    hubspot_id: str | None = None

    def upsert_input(self) -> dict:
        return {"idProperty": "email", "id": self.email, "properties": self.properties}


class ContactsApi(Protocol):
    def upsert_contacts(self, inputs: list[dict]) -> UpsertAnswer: ...


@dataclass(frozen=True)
class UpsertAnswer:
    """A batch call's results and, for a 207, its per-input errors (dicts: category, message, context)."""

    results: list[dict]
    errors: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ContactOutcome:
    email: str
    content_hash: str
    outcome: str  # created | updated | merged | secondary_email | skipped | failed
    hubspot_id: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    transient: bool = False
    skip_reason: str | None = None  # of a skipped contact: hubspot/modes.py SKIP_REASONS


@dataclass
class SyncReport:
    due: int = 0
    created: int = 0
    updated: int = 0  # merged and secondary_email included
    failed: int = 0
    skipped: int = 0  # left alone by the sync mode, by reason in skip_reasons
    pending: int = 0
    batches: int = 0
    split_batches: int = 0
    isolation_requests: int = 0
    unisolated: int = 0  # contacts of refused batches left pending once the isolation cap was reached
    stopped_reason: str | None = None
    failure_reasons: collections.Counter = field(default_factory=collections.Counter)
    # contacts HubSpot answered for under another address: merged | secondary_email
    other_address: collections.Counter = field(default_factory=collections.Counter)
    skip_reasons: collections.Counter = field(default_factory=collections.Counter)
    _isolation_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve_isolation(self, requests: int, contacts: int) -> bool:
        """Whether `requests` more may be spent isolating `contacts` within the cap.

        Called from the sender threads, hence the lock.
        """
        with self._isolation_lock:
            if self.isolation_requests + requests > MAX_ISOLATION_REQUESTS:
                self.unisolated += contacts
                return False
            self.isolation_requests += requests
            return True

    def add(self, outcomes: Iterable[ContactOutcome]) -> None:
        for item in outcomes:
            if item.outcome == "failed":
                self.failed += 1
                self.failure_reasons[item.error_category or "UNKNOWN"] += 1
            elif item.outcome == "created":
                self.created += 1
            elif item.outcome == "skipped":
                self.skipped += 1
                self.skip_reasons[item.skip_reason] += 1
            else:
                self.updated += 1
                if item.outcome != "updated":
                    self.other_address[item.outcome] += 1


def prevalidate(rows: Iterable[dict], writer: PropertyWriter) -> tuple[list[Pending], list[ContactOutcome]]:
    """The contacts to send, and, with a reason, those HubSpot would refuse anyway: a bad or repeated
    email, or a value its property's type cannot take. A refusal here costs no request."""
    accepted, rejected, seen = [], [], set()
    for row in rows:
        email = row[EMAIL_FIELD]
        reason = properties = None
        if not email or len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
            reason = ("INVALID_EMAIL", f"Email address {email!r} is invalid")
        elif email in seen:
            reason = ("DUPLICATE_EMAIL", f"{email} appears twice in one sync")
        else:
            try:
                properties = writer.properties(row)
            except ValueRefused as exc:
                reason = (exc.code, str(exc))
        if reason:
            rejected.append(
                ContactOutcome(email, row[HASH_COLUMN], "failed", error_category=reason[0], error_message=reason[1])
            )
        else:
            seen.add(email)
            accepted.append(Pending(email, row[HASH_COLUMN], properties or {}, row.get(HUBSPOT_ID_FIELD)))
    return accepted, rejected


def batched(rows: Iterable[T], size: int = MAX_BATCH) -> Iterator[list[T]]:
    """`rows` in HubSpot batches: at most MAX_BATCH, HubSpot's limit."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
    return streams.batched(rows, size)


def _failed(contact: Pending, category: str, message: str, transient: bool = False) -> ContactOutcome:
    return ContactOutcome(
        contact.email,
        contact.content_hash,
        "failed",
        error_category=category,
        error_message=message[:2000],
        transient=transient,
    )


def named_inputs(error: dict) -> set[str]:
    """What a 207 error's `context` names (ids, emails, trace ids), lowercased."""
    return {
        str(value).lower()
        for values in (error.get("context") or {}).values()
        for value in (values if isinstance(values, list) else [values])
    }


def failed_by(contact: Pending, error: dict) -> ContactOutcome:
    """`contact` failed as a 207's `error` says; worth sending again unless its data is at fault."""
    category = str(error.get("category") or "UNKNOWN")
    return _failed(
        contact, category, redact(str(error.get("message") or "")), transient=category not in DATA_ERROR_CATEGORIES
    )


def split_list(value: str | None) -> set[str]:
    """HubSpot's multi-value properties (hs_additional_emails, hs_merged_object_ids): `;`-separated."""
    return {part.strip().lower() for part in (value or "").split(";") if part.strip()}


def match_answer(batch: list[Pending], answer: UpsertAnswer) -> tuple[list[ContactOutcome], list[Pending]]:
    """Each contact's outcome by what HubSpot says, and the contacts no result can be told to be for.

    HubSpot does not promise results in input order, and answers for a contact it found by a
    secondary email, or merged into another, under that contact's primary email and id. So a
    result is matched by the email sent, then by the id HubSpot gave the contact before (or its
    merged ids), then by the additional emails it lists; one contact left with one result is
    that result's. A 207's errors are matched by the ids they name.
    """
    outcomes: list[ContactOutcome] = []
    left = list(batch)
    unused = list(answer.results)

    def take(contact: Pending, result: dict, outcome: str) -> None:
        left.remove(contact)
        unused.remove(result)
        outcomes.append(ContactOutcome(contact.email, contact.content_hash, outcome, hubspot_id=str(result["id"])))

    def other_address(contact: Pending, result: dict) -> str:
        return "merged" if contact.hubspot_id and contact.hubspot_id != str(result["id"]) else "secondary_email"

    by_email = {str((r.get("properties") or {}).get("email") or "").lower(): r for r in unused}
    for contact in list(left):
        result = by_email.get(contact.email)
        if result is not None and result in unused:
            take(contact, result, "created" if result.get("new") else "updated")
    for contact in list(left):
        for result in unused:
            properties = result.get("properties") or {}
            if contact.hubspot_id and (
                contact.hubspot_id == str(result["id"])
                or contact.hubspot_id in split_list(properties.get("hs_merged_object_ids"))
            ):
                take(contact, result, other_address(contact, result))
                break
            if contact.email in split_list(properties.get("hs_additional_emails")):
                take(contact, result, other_address(contact, result))
                break
    for error in answer.errors:
        named = named_inputs(error)
        for contact in [c for c in left if c.email in named]:
            left.remove(contact)
            outcomes.append(failed_by(contact, error))
    if len(left) == 1 and len(unused) == 1:
        take(left[0], unused[0], other_address(left[0], unused[0]))
    return outcomes, left


# One batch written by a mode: each contact's outcome, and the contacts no result can be told to be for.
BatchWrite = Callable[[list[Pending]], tuple[list[ContactOutcome], list[Pending]]]
# What a contact refused on its own gets (the refusal is HubSpot's answer to a batch of one).
LoneRefusal = Callable[[Pending, HubSpotError], ContactOutcome]


def refused_alone(contact: Pending, error: HubSpotError) -> ContactOutcome:
    return _failed(contact, error.category, error.message)


def write_isolating(
    write: BatchWrite,
    batch: list[Pending],
    report: SyncReport,
    whole: bool = True,
    lone_refusal: LoneRefusal = refused_alone,
) -> list[ContactOutcome]:
    """Write `batch`; on a data error, halve it until the rejected records stand alone.

    A refused property stops the sync (PropertyRefused), judged on the `whole` batch only: a half
    whose few contacts all fail alike says nothing about the property. Contacts whose results
    cannot be told apart are sent again one by one. Past the isolation cap a refused batch's
    contacts get no outcome: they stay pending.
    """

    def again(part: list[Pending]) -> list[ContactOutcome]:
        return write_isolating(write, part, report, whole=False, lone_refusal=lone_refusal)

    try:
        outcomes, unmatched = write(batch)
    except HubSpotApiError as exc:
        if not exc.error.is_data_error:
            raise
        refused = refused_property(exc.error, len(batch)) if whole else None
        if refused:
            raise PropertyRefused(
                f"HubSpot refuses property {refused[0]!r} for every contact ({refused[1]}): remove it from "
                "the column map or map another property"
            ) from None
        if len(batch) == 1:
            return [lone_refusal(batch[0], exc.error)]
        if not report.reserve_isolation(2, len(batch)):
            return []
        report.split_batches += 1
        middle = len(batch) // 2
        return again(batch[:middle]) + again(batch[middle:])
    for contact in unmatched:
        if len(batch) > 1 and report.reserve_isolation(1, 0):
            outcomes += again([contact])
        else:
            outcomes.append(
                _failed(
                    contact,
                    UNMATCHED,
                    f"HubSpot's answer to this contact's write held no result that could be told to "
                    f"be for it; it is sent again on up to {MAX_UNMATCHED_RUNS} runs",
                    transient=True,
                )
            )
    return outcomes


def upsert_isolating(api: ContactsApi, batch: list[Pending], report: SyncReport) -> list[ContactOutcome]:
    """Upsert `batch` by email (the default mode), isolating refused records."""
    return write_isolating(
        lambda part: match_answer(part, api.upsert_contacts([contact.upsert_input() for contact in part])),
        batch,
        report,
    )


def sync_contacts(
    api: ContactsApi,
    contacts: Iterable[Pending],
    record: Callable[[list[ContactOutcome]], None],
    report: SyncReport,
    log: logging.Logger,
    max_in_flight: int = settings.default_value(settings.HUBSPOT_MAX_IN_FLIGHT),
    batch_size: int = MAX_BATCH,
    send: Callable[[list[Pending]], list[ContactOutcome]] | None = None,
) -> SyncReport:
    """Send every row, `max_in_flight` batches at a time; `record` runs in this thread per batch.

    `send` writes one batch (in a sender thread) and returns its outcomes; by default an upsert.

    A DAILY rate limit stops the sync cleanly: batches in flight finish and are recorded, the
    rest stays pending for the next run. Any other error stops it the same way, then re-raises.
    """
    progress = Progress(log, "hubspot_contacts", "contacts", report.due)
    send = send or (lambda batch: upsert_isolating(api, batch, report))
    # Batches read ahead of the senders: a sender that frees never waits for this thread to record
    # an answer and read the next batch, so the limiter alone sets the pace.
    queued_at_most = 2 * max_in_flight
    stop_error: BaseException | None = None
    stopping = threading.Event()  # set by the first sender that fails: queued batches stay unsent

    def send_unless_stopping(batch: list[Pending]) -> list[ContactOutcome] | None:
        if stopping.is_set():
            return None
        try:
            return send(batch)
        except BaseException:
            stopping.set()
            raise

    with futures.ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="hubspot") as pool:
        in_flight: dict[futures.Future, list[Pending]] = {}  # submitted: sending or waiting for a sender

        def collect(done: Iterable[futures.Future]) -> None:
            nonlocal stop_error
            for future in done:
                batch = in_flight[future]
                try:
                    outcomes = future.result()
                except DailyLimitReached as exc:
                    report.stopped_reason = f"HubSpot daily limit reached: {exc}"
                    stop_error = stop_error or exc
                except BaseException as exc:  # noqa: BLE001 - re-raised after in-flight batches are recorded
                    stop_error = stop_error or exc
                else:
                    if outcomes is None:  # not sent: the sync was stopping
                        report.batches -= 1
                    else:
                        record(outcomes)  # an interrupt here leaves the batch in `in_flight`: recorded below
                        report.add(outcomes)
                        progress.add(len(batch))
                del in_flight[future]

        try:
            for batch in batched(contacts, batch_size):
                if stop_error is not None:
                    break
                report.batches += 1
                in_flight[pool.submit(send_unless_stopping, batch)] = batch
                if len(in_flight) >= queued_at_most:
                    collect(futures.wait(in_flight, return_when=futures.FIRST_COMPLETED).done)
            while in_flight:
                collect(futures.wait(in_flight, return_when=futures.FIRST_COMPLETED).done)
        except BaseException as exc:  # the run terminated (Dagster's interrupt), or reading the contacts failed
            stop_error = stop_error or exc
            stopping.set()
            # What HubSpot may have applied is recorded, so the next run does not send it again.
            collect(futures.wait(in_flight).done)

    report.pending = report.due - report.created - report.updated - report.failed - report.skipped
    log.info(progress.line())
    if stop_error is not None and not isinstance(stop_error, DailyLimitReached):
        raise stop_error
    return report
