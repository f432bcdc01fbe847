"""The company sync: what is due, the batches sent, and each company's or contact's outcome.

Pure logic around an injected API (`CrmObjectsApi` or a stand-in); what is due comes from the
state rows (etl_assets/hubspot/companies_state.py), so an unchanged rerun sends nothing.

Companies: new keys are created, changed ones updated by id, 100 per request. A batch refused as
a whole for its data (400/409) fails its companies, which wait for a change; a 207 fails only
the inputs it names. A company HubSpot no longer knows (update answered OBJECT_NOT_FOUND) loses
its id and is created again on the next run.

Associations: each contact with a company and both HubSpot ids is associated with it. A contact
whose company changed first loses the pair this sync created (archive), then gets the new one;
a contact whose company is gone only loses it. Pairs the sync did not create are never touched.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from etl_assets.hubspot.companies_keys import Company
from etl_assets.hubspot.errors import HubSpotApiError
from etl_assets.hubspot.sync import DATA_ERROR_CATEGORIES, UpsertAnswer, batched
from etl_assets.logs.redaction import redact

NOT_FOUND = "OBJECT_NOT_FOUND"
UNMATCHED = "UNMATCHED"


class CompaniesApi(Protocol):
    def create_companies(self, inputs: list[tuple[str, dict[str, str]]]) -> UpsertAnswer: ...
    def update_companies(self, inputs: list[tuple[str, dict[str, str]]]) -> UpsertAnswer: ...
    def associate(self, pairs: list[tuple[str, str]]) -> UpsertAnswer: ...
    def dissociate(self, pairs: list[tuple[str, str]]) -> None: ...


@dataclass
class Report:
    """Counts of one sync (companies or associations); `outcomes` per outcome name."""

    unchanged: int = 0
    batches: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    failure_reasons: collections.Counter = field(default_factory=collections.Counter)
    preview: list[dict] = field(default_factory=list)  # the first outcomes, for the metadata

    def add(self, rows: Iterable[dict], preview_rows: int = 10) -> None:
        for row in rows:
            self.outcomes[row["outcome"]] += 1
            if row["outcome"] == "failed":
                self.failure_reasons[row["error_category"] or "UNKNOWN"] += 1
            if len(self.preview) < preview_rows:
                self.preview.append(row)


def _error_fields(category: str, message: str) -> dict:
    return {
        "error_category": category,
        "error_message": redact(message)[:2000],
        "error_transient": category not in DATA_ERROR_CATEGORIES and category != UNMATCHED,
    }


def _no_error() -> dict:
    return {"error_category": None, "error_message": None, "error_transient": False}


# ---------------------------------------------------------------- companies


@dataclass(frozen=True)
class CompanyWork:
    to_create: list[Company]
    to_update: list[tuple[str, Company]]  # (HubSpot id, company)
    unchanged: int


def due_companies(companies: dict[str, Company], states: dict[str, dict]) -> CompanyWork:
    to_create, to_update, unchanged = [], [], 0
    for key, company in companies.items():
        row = states.get(key)
        digest = company.content_hash
        if row is not None and row["status"] == "synced" and row["synced_hash"] == digest and row["hubspot_id"]:
            unchanged += 1
        elif (
            row is not None
            and row["status"] == "failed"
            and row["attempted_hash"] == digest
            and not row["error_transient"]
        ):
            unchanged += 1  # refused for its data: waits until it changes
        elif row is not None and row["hubspot_id"]:
            to_update.append((row["hubspot_id"], company))
        else:
            to_create.append(company)
    return CompanyWork(to_create, to_update, unchanged)


def _company_row(company: Company, outcome: str, hubspot_id: str | None, **error) -> dict:
    return {
        "company_key": company.key,
        "name": company.name,
        "domain": company.domain,
        "hubspot_id": hubspot_id,
        "outcome": outcome,
        "content_hash": company.content_hash,
        **(error or _no_error()),
    }


def _errors_by_context(answer: UpsertAnswer, key: str) -> dict[str, tuple[str, str]]:
    """The 207 errors by each value their context lists under `key`: (category, message)."""
    named = {}
    for error in answer.errors:
        for value in (error.get("context") or {}).get(key) or []:
            named[str(value)] = (str(error.get("category") or "UNKNOWN"), str(error.get("message") or ""))
    return named


def _created(batch: list[Company], answer: UpsertAnswer) -> list[dict]:
    """Match create results by trace id (the batch position), else by the properties sent."""
    left = dict(enumerate(batch))
    rows = []
    for result in answer.results:
        trace = result.get("object_write_trace_id")
        properties = result.get("properties") or {}
        position = int(trace) if trace is not None and str(trace).isdigit() else None
        if position not in left:
            position = next(
                (i for i, c in left.items() if all(properties.get(k) == v for k, v in c.properties().items())), None
            )
        if position is not None:
            rows.append(_company_row(left.pop(position), "created", str(result["id"])))
    errors = _errors_by_context(answer, "objectWriteTraceId")
    for position, company in left.items():
        category, message = errors.get(
            str(position),
            (UNMATCHED, "HubSpot's answer held no result that could be told to be this company's; it is sent "
             "again once its data changes"),
        )  # fmt: skip
        rows.append(_company_row(company, "failed", None, **_error_fields(category, message)))
    return rows


def _create(api: CompaniesApi, batch: list[Company]) -> list[dict]:
    # The batch position is each input's objectWriteTraceId: a 207 names failed inputs by it.
    return _created(batch, api.create_companies([(str(i), company.properties()) for i, company in enumerate(batch)]))


def _update(api: CompaniesApi, batch: list[tuple[str, Company]]) -> list[dict]:
    return _updated(batch, api.update_companies([(hubspot_id, company.properties()) for hubspot_id, company in batch]))


def _updated(batch: list[tuple[str, Company]], answer: UpsertAnswer) -> list[dict]:
    returned = {str(result["id"]) for result in answer.results}
    errors = _errors_by_context(answer, "ids")
    rows = []
    for hubspot_id, company in batch:
        if hubspot_id in returned:
            rows.append(_company_row(company, "updated", hubspot_id))
            continue
        category, message = errors.get(hubspot_id, (UNMATCHED, "HubSpot's answer held no result for this company"))
        kept = None if category == NOT_FOUND else hubspot_id  # deleted in HubSpot: created again next run
        rows.append(_company_row(company, "failed", kept, **_error_fields(category, message)))
    return rows


def _refusal(send: Callable[..., list[dict]], *args) -> tuple[list[dict], dict | None]:
    """(`send(*args)`, None), or ([], the error fields) when HubSpot refuses the whole batch for its data."""
    try:
        return send(*args), None
    except HubSpotApiError as exc:
        if not exc.error.is_data_error:
            raise
        return [], _error_fields(exc.error.category, exc.error.message)


def sync_companies(api: CompaniesApi, work: CompanyWork, record: Callable[[list[dict]], None], report: Report) -> None:
    for batch in batched(work.to_create):
        report.batches += 1
        rows, error = _refusal(_create, api, batch)
        if error:
            rows = [_company_row(company, "failed", None, **error) for company in batch]
        record(rows)
        report.add(rows)
    for update in batched(work.to_update):
        report.batches += 1
        rows, error = _refusal(_update, api, update)
        if error:
            rows = [_company_row(company, "failed", hubspot_id, **error) for hubspot_id, company in update]
        record(rows)
        report.add(rows)


# ---------------------------------------------------------------- associations


@dataclass(frozen=True)
class Wanted:
    """The association a contact should have."""

    email: str
    company_key: str
    contact_id: str
    company_id: str

    @property
    def fingerprint(self) -> str:
        return f"{self.contact_id}>{self.company_id}>{self.company_key}"[:400]


@dataclass(frozen=True)
class AssociationWork:
    to_archive: list[dict]  # state rows whose held pair goes
    to_create: list[Wanted]
    unchanged: int


def held_pair(row: dict | None) -> tuple[str, str] | None:
    return (row["contact_id"], row["company_id"]) if row and row["contact_id"] and row["company_id"] else None


def due_associations(wanted: dict[str, Wanted | None], states: dict[str, dict]) -> AssociationWork:
    """`wanted`: every contact with a company and both ids (a Wanted), or with none (None).

    Contacts absent from `wanted` (not in `contacts`, or waiting for an id) are left as they are.
    """
    to_archive: list[dict] = []
    to_create: list[Wanted] = []
    unchanged = 0
    for email, want in wanted.items():
        row = states.get(email)
        held = held_pair(row)
        if want is None:
            if row and held:
                to_archive.append(row)
            continue
        if held == (want.contact_id, want.company_id) and row and row["company_key"] == want.company_key:
            unchanged += 1
        elif row and row["status"] == "failed" and row["attempted"] == want.fingerprint and not row["error_transient"]:
            unchanged += 1  # refused for its data: waits until something changes
        else:
            if row and held and held != (want.contact_id, want.company_id):
                to_archive.append(row)
            to_create.append(want)
    return AssociationWork(to_archive, to_create, unchanged)


def _association_row(email: str, held: tuple[str, str] | None, key: str | None, outcome: str, **fields) -> dict:
    contact_id, company_id = held or (None, None)
    return {
        "email": email,
        "contact_id": contact_id,
        "company_id": company_id,
        "company_key": key if held else None,
        "outcome": outcome,
        "attempted": None,
        **_no_error(),
        **fields,
    }


def _associated(batch: list[Wanted], answer: UpsertAnswer) -> list[dict]:
    made = {(str(r.get("from_object_id")), str(r.get("to_object_id"))) for r in answer.results}
    # HubSpot's 207 errors for associations name no input we could rely on (unverified): a pair
    # missing from the results takes the first error's reason.
    first = answer.errors[0] if answer.errors else {}
    category = str(first.get("category") or UNMATCHED)
    message = str(first.get("message") or "HubSpot's answer held no result for this association")
    rows = []
    for want in batch:
        pair = (want.contact_id, want.company_id)
        if pair in made:
            rows.append(_association_row(want.email, pair, want.company_key, "associated"))
        else:
            rows.append(_failed_association(want, None, **_error_fields(category, message)))
    return rows


def _failed_association(want: Wanted, held: tuple[str, str] | None, **error) -> dict:
    return _association_row(want.email, held, None, "failed", attempted=want.fingerprint, **error)


def _archive(api: CompaniesApi, rows: list[dict]) -> list[dict]:
    api.dissociate([pair for row in rows if (pair := held_pair(row))])
    return [_association_row(row["email"], None, None, "archived") for row in rows]


def _associate(api: CompaniesApi, batch: list[Wanted]) -> list[dict]:
    return _associated(batch, api.associate([(want.contact_id, want.company_id) for want in batch]))


def sync_associations(
    api: CompaniesApi,
    work: AssociationWork,
    wanted: dict[str, Wanted | None],
    record: Callable[[list[dict]], None],
    report: Report,
) -> None:
    """Archive the held pairs that go, then create the wanted ones (only where archiving went through)."""
    blocked: set[str] = set()
    for batch in batched(work.to_archive):
        report.batches += 1

        rows, error = _refusal(_archive, api, batch)
        if error:
            blocked.update(row["email"] for row in batch)  # still held: no new pair on top of it
            rows = [
                _association_row(
                    row["email"],
                    held_pair(row),
                    row["company_key"],
                    "failed",
                    attempted=want.fingerprint if (want := wanted.get(row["email"])) else None,
                    **error,
                )
                for row in batch
            ]
        record(rows)
        report.add(rows)
    for create in batched([want for want in work.to_create if want.email not in blocked]):
        report.batches += 1
        rows, error = _refusal(_associate, api, create)
        if error:
            rows = [_failed_association(want, None, **error) for want in create]
        record(rows)
        report.add(rows)
