"""One batch written the way the sync mode says, through HubSpot's batch endpoints only.

`upsert`: batch/upsert by email. `update_only`: batch/update by the id HubSpot gave a contact
before; the others are first looked up with one batch/read by email (idProperty=email), and those
no contact has are skipped. `create_only`: batch/create with a trace id on each input, so a
contact whose email exists fails alone (207 CONFLICT) and is skipped; should HubSpot refuse the
whole batch instead (409, naming one existing id), the isolation in hubspot/sync.py halves it.
So a batch of 100 costs 1 request, or 2 in `update_only` while ids are still unknown; never a
request per contact (beyond isolating refused records, as for upserts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from etl_assets.hubspot.errors import HubSpotApiError, HubSpotError, existing_id
from etl_assets.hubspot.modes import (
    EXISTS_IN_HUBSPOT,
    NOT_IN_HUBSPOT,
    UPDATE_ONLY,
    UPSERT,
    plan_batch,
    skipped,
)
from etl_assets.hubspot.removals import Leaving
from etl_assets.hubspot.sync import (
    MAX_BATCH,
    ContactOutcome,
    ContactsApi,
    Pending,
    SyncReport,
    UpsertAnswer,
    batched,
    failed_by,
    named_inputs,
    refused_alone,
    split_list,
    upsert_isolating,
    write_isolating,
)

TRACE_ID = "objectWriteTraceId"
NOT_FOUND = "OBJECT_NOT_FOUND"
# What a lookup reads: a contact found by a secondary email answers under its primary one.
LOOKUP_PROPERTIES = ["email", "hs_additional_emails"]
EMAIL_PROPERTY = "email"


class ModesApi(ContactsApi, Protocol):
    def create_contacts(self, inputs: list[dict]) -> UpsertAnswer: ...
    def update_contacts(self, inputs: list[dict]) -> UpsertAnswer: ...
    def read_contacts_by_email(self, emails: list[str], properties: list[str]) -> UpsertAnswer: ...
    def archive_contacts(self, ids: list[str]) -> None: ...


def batch_sender(mode: str, api: ModesApi, report: SyncReport) -> Callable[[list[Pending]], list[ContactOutcome]]:
    """The function `sync_contacts` calls per batch of at most 100 contacts in `mode`."""
    if mode == UPSERT:
        return lambda batch: upsert_isolating(api, batch, report)

    def send(batch: list[Pending]) -> list[ContactOutcome]:
        plan = plan_batch(mode, batch)
        outcomes = list(plan.skipped)
        write, by_secondary = list(plan.write), set[str]()
        if plan.look_up:
            found, by_secondary, not_found = look_up(api, plan.look_up)
            write += found
            outcomes += not_found
        if not write:
            return outcomes
        if mode == UPDATE_ONLY:
            return outcomes + write_isolating(lambda part: update_by_id(api, part, by_secondary), write, report)
        return outcomes + write_isolating(lambda part: create(api, part), write, report, lone_refusal=refused_create)

    return send


def look_up(api: ModesApi, contacts: list[Pending]) -> tuple[list[Pending], set[str], list[ContactOutcome]]:
    """One batch/read by email: the contacts found (with their ids), the emails found as a
    secondary email, and outcomes for the rest (skipped; failed when HubSpot said why not)."""
    answer = api.read_contacts_by_email([contact.email for contact in contacts], LOOKUP_PROPERTIES)
    by_primary: dict[str, str] = {}
    by_other: dict[str, str] = {}
    for result in answer.results:
        properties = result.get("properties") or {}
        by_primary[str(properties.get(EMAIL_PROPERTY) or "").lower()] = str(result["id"])
        by_other.update(dict.fromkeys(split_list(properties.get("hs_additional_emails")), str(result["id"])))
    errors = [error for error in answer.errors if error.get("category") != NOT_FOUND]
    found, by_secondary, outcomes = [], set(), []
    for contact in contacts:
        hubspot_id = by_primary.get(contact.email) or by_other.get(contact.email)
        error = next((error for error in errors if contact.email in named_inputs(error)), None)
        if hubspot_id:
            found.append(replace(contact, hubspot_id=hubspot_id))
            if contact.email not in by_primary:
                by_secondary.add(contact.email)
        elif error is not None:
            outcomes.append(failed_by(contact, error))
        else:
            outcomes.append(skipped(contact, NOT_IN_HUBSPOT))
    return found, by_secondary, outcomes


def update_input(contact: Pending) -> dict:
    """A batch/update input: by id, without the email (see `update_by_id`)."""
    properties = {name: value for name, value in contact.properties.items() if name != EMAIL_PROPERTY}
    return {"id": contact.hubspot_id, "properties": properties}


def update_by_id(
    api: ModesApi, batch: list[Pending], by_secondary: set[str]
) -> tuple[list[ContactOutcome], list[Pending]]:
    """batch/update by id, without the email: the id names the contact, and writing an email
    found as a secondary one would make it the contact's primary. A contact whose id HubSpot no
    longer knows (deleted, or merged away) is skipped; the others are sent again without it."""
    try:
        answer = api.update_contacts([update_input(contact) for contact in batch])
    except HubSpotApiError as exc:
        gone = set(exc.error.ids) & {contact.hubspot_id for contact in batch}
        if exc.error.category != NOT_FOUND or not gone:
            raise
        outcomes = [skipped(contact, NOT_IN_HUBSPOT) for contact in batch if contact.hubspot_id in gone]
        rest = [contact for contact in batch if contact.hubspot_id not in gone]
        more, unmatched = update_by_id(api, rest, by_secondary) if rest else ([], [])
        return outcomes + more, unmatched
    by_id = {str(result["id"]): result for result in answer.results}
    outcomes, unmatched = [], []
    for contact in batch:
        error = next((e for e in answer.errors if str(contact.hubspot_id) in named_inputs(e)), None)
        if str(contact.hubspot_id) in by_id:
            outcome = "secondary_email" if contact.email in by_secondary else "updated"
            outcomes.append(ContactOutcome(contact.email, contact.content_hash, outcome, hubspot_id=contact.hubspot_id))
        elif error is not None:
            outcomes.append(failed_by(contact, error))
        else:
            unmatched.append(contact)
    return outcomes, unmatched


def create(api: ModesApi, batch: list[Pending]) -> tuple[list[ContactOutcome], list[Pending]]:
    """batch/create, each input traced by its email; a contact whose email exists is skipped."""
    answer = api.create_contacts([{TRACE_ID: contact.email, "properties": contact.properties} for contact in batch])
    by_email = {str((r.get("properties") or {}).get(EMAIL_PROPERTY) or "").lower(): r for r in answer.results}
    outcomes, unmatched = [], []
    for contact in batch:
        error = next((e for e in answer.errors if contact.email in named_inputs(e)), None)
        if contact.email in by_email:
            result_id = str(by_email[contact.email]["id"])
            outcomes.append(ContactOutcome(contact.email, contact.content_hash, "created", hubspot_id=result_id))
        elif error is not None and error.get("category") == "CONFLICT":
            outcomes.append(skipped(contact, EXISTS_IN_HUBSPOT, existing_id(str(error.get("message")))))
        elif error is not None:
            outcomes.append(failed_by(contact, error))
        else:
            unmatched.append(contact)
    return outcomes, unmatched


def refused_create(contact: Pending, error: HubSpotError) -> ContactOutcome:
    """A create refused for this contact alone: a CONFLICT says its email exists."""
    if error.category == "CONFLICT":
        return skipped(contact, EXISTS_IN_HUBSPOT, existing_id(error.message))
    return refused_alone(contact, error)


def archive(api: ModesApi, leaving: list[Leaving], done: Callable[[list[Leaving]], None]) -> tuple[int, int]:
    """Archive `leaving`, 100 ids a request, calling `done` after each batch; returns (archived,
    already gone). An id HubSpot no longer knows (archived or deleted by someone else) is gone
    already: counted apart, and the rest of its batch is sent again without it."""
    archived = gone = 0
    for batch in batched(leaving, MAX_BATCH):
        while batch:
            try:
                api.archive_contacts([item.hubspot_id for item in batch])
            except HubSpotApiError as exc:
                unknown = [item for item in batch if item.hubspot_id in set(exc.error.ids)]
                if exc.error.category != NOT_FOUND or not unknown:
                    raise
                done(unknown)
                gone += len(unknown)
                batch = [item for item in batch if item not in unknown]
                continue
            done(batch)
            archived += len(batch)
            batch = []
    return archived, gone
