"""The local HubSpot server plus companies and contact-company associations (v4), for tests.

``HubSpotCrmServer`` adds its routes in ``_process`` and hands every other request to
``HubSpotServer``, so auth, scopes, the shared rolling window, the daily limit and scripted
failures apply to these endpoints exactly as to the contacts' (they all count against one
account's limits). Shapes follow hubspot-api-client 12.0.0's models (companies ``batch_api``,
``associations.v4.batch_api``); where HubSpot's behaviour is not known the stricter reading is
modelled and marked "unverified".

* ``POST /crm/v3/objects/companies/batch/create``: 201; at most 100 inputs; an input with
  ``objectWriteTraceId`` fails alone (207, its trace id in ``context``), one without fails the
  batch (400). Results carry the properties sent plus ``hs_object_id``, ``createdate``,
  ``hs_lastmodifieddate`` and not the trace id (whether HubSpot echoes it: unverified; not, stricter).
  Domains are not unique: two creates with one domain make two companies, as in HubSpot.
* ``POST /crm/v3/objects/companies/batch/update``: 200; duplicate ids fail the batch (400); an id
  no company has fails alone, 207 ``OBJECT_NOT_FOUND`` with ``context.ids`` (unverified).
* ``POST /crm/v3/objects/companies/batch/upsert``: only by a property with ``hasUniqueValue``;
  no standard company property has it, so 400 (HubSpot's wording unverified).
* ``POST /crm/v4/associations/contacts/companies/batch/create``: 201 with
  ``LabelsBetweenObjectPair`` results; types must be contact -> company ones (HUBSPOT_DEFINED 279
  unlabeled, 1 primary), else 400; a contact or company id that does not exist fails that input
  alone, 207 (unverified).
* ``.../batch/associate/default``: the unlabeled type (279); 200.
* ``.../batch/archive``: removes every association type between each pair (HubSpot: removing
  the unlabeled association removes the labeled ones too); 204, no body; unknown pairs are no-ops
  (unverified).
* Scopes: companies ``crm.objects.companies.write``; associations both objects' write scopes
  (``crm.objects.contacts.write`` and ``crm.objects.companies.write``).
"""

from __future__ import annotations

import collections
import copy
from typing import Any

from etl_assets_tests.servers.hubspot_server import (
    HubSpotServer,
    _as_hubspot_value,
    _invalid_value,
    _now_iso,
    _Reply,
    _validation_error,
    _values_not_valid,
)

COMPANIES_PATH = "/crm/v3/objects/companies"
COMPANY_CREATE_PATH = f"{COMPANIES_PATH}/batch/create"
COMPANY_UPDATE_PATH = f"{COMPANIES_PATH}/batch/update"
COMPANY_UPSERT_PATH = f"{COMPANIES_PATH}/batch/upsert"
ASSOCIATIONS_PATH = "/crm/v4/associations/contacts/companies"
ASSOCIATE_PATH = f"{ASSOCIATIONS_PATH}/batch/create"
ASSOCIATE_DEFAULT_PATH = f"{ASSOCIATIONS_PATH}/batch/associate/default"
DISSOCIATE_PATH = f"{ASSOCIATIONS_PATH}/batch/archive"

UNLABELED = ("HUBSPOT_DEFINED", 279)  # contact -> company, unlabeled (HubSpot's association docs)
PRIMARY = ("HUBSPOT_DEFINED", 1)  # contact -> company, primary
CONTACT_TYPE_ID, COMPANY_TYPE_ID = "0-1", "0-2"
COMPANY_PROPERTIES = {"name", "domain", "website", "city", "country", "phone", "industry", "description"}
_READ_ONLY_COMPANY_PROPERTIES = {"hs_object_id", "createdate", "hs_lastmodifieddate"}
_COMPANY_SCOPES = ["crm.objects.companies.write"]
_ASSOCIATION_SCOPES = ["crm.objects.contacts.write", "crm.objects.companies.write"]
_SCOPES = {
    COMPANY_CREATE_PATH: _COMPANY_SCOPES,
    COMPANY_UPDATE_PATH: _COMPANY_SCOPES,
    COMPANY_UPSERT_PATH: _COMPANY_SCOPES,
    ASSOCIATE_PATH: _ASSOCIATION_SCOPES,
    ASSOCIATE_DEFAULT_PATH: _ASSOCIATION_SCOPES,
    DISSOCIATE_PATH: _ASSOCIATION_SCOPES,
}


def _batch_error(category: str, message: str, context: dict) -> dict:
    return {"status": "error", "category": category, "message": message, "context": context, "errors": [], "links": {}}


def _batch_reply(status: int, results: list[dict], errors: list[dict], started: str) -> _Reply:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now_iso()}
    if errors:
        body.update(numErrors=len(errors), errors=errors)
        return _Reply(207, body)
    return _Reply(status, body)


class HubSpotCrmServer(HubSpotServer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.companies: dict[str, dict] = {}  # id -> record
        # (contact id, company id) -> the association types between them, as (category, type id)
        self.associations: dict[tuple[str, str], set[tuple[str, int]]] = {}
        self._next_company_id = 900_001

    # ------------------------------------------------------------------ routing (under the lock)

    def _missing_scopes(self, method: str, path: str) -> list[str]:
        needed = _SCOPES.get(path) if method == "POST" else None
        if needed is None:
            return super()._missing_scopes(method, path)
        return [scope for scope in needed if self.scopes is not None and scope not in self.scopes]

    def _process(self, method: str, path: str, body: Any) -> _Reply:
        routes = {
            COMPANY_CREATE_PATH: self._create_companies,
            COMPANY_UPDATE_PATH: self._update_companies,
            COMPANY_UPSERT_PATH: self._upsert_companies,
            ASSOCIATE_PATH: self._associate,
            ASSOCIATE_DEFAULT_PATH: self._associate_default,
            DISSOCIATE_PATH: self._dissociate,
        }
        if method == "POST" and path in routes:
            return routes[path](body)
        return super()._process(method, path, body)

    # ------------------------------------------------------------------ companies

    @staticmethod
    def _company_problems(properties: Any) -> list[dict]:
        if not isinstance(properties, dict):
            return [_invalid_value("properties", "INVALID_INPUT", '"properties" must be an object')]
        problems = []
        for name in properties:
            if name in _READ_ONLY_COMPANY_PROPERTIES:
                problems.append(
                    _invalid_value(
                        name, "READ_ONLY_VALUE", f'"{name}" is a calculated property; its value cannot be set'
                    )
                )
            elif name not in COMPANY_PROPERTIES:
                problems.append(_invalid_value(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
        return problems

    def _write_company(self, record: dict | None, properties: dict) -> dict:
        now = _now_iso()
        if record is None:
            company_id = str(self._next_company_id)
            self._next_company_id += 1
            record = {
                "id": company_id,
                "properties": {"hs_object_id": company_id, "createdate": now},
                "createdAt": now,
                "archived": False,
            }
            self.companies[company_id] = record
        for name, value in properties.items():
            record["properties"][name] = _as_hubspot_value(value)
        record["properties"]["hs_lastmodifieddate"] = record["updatedAt"] = now
        result = copy.deepcopy(record)
        result["properties"] = {
            name: value
            for name, value in result["properties"].items()
            if name in properties or name in _READ_ONLY_COMPANY_PROPERTIES
        }
        return result

    def _create_companies(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        checked = [(item, self._company_problems(item.get("properties") or {})) for item in inputs]
        whole = [problems for item, problems in checked if problems and not item.get("objectWriteTraceId")]
        if whole:
            return _values_not_valid([problem for problems in whole for problem in problems])
        results, errors = [], []
        for item, problems in checked:
            if problems:
                errors.append(
                    _batch_error(
                        "VALIDATION_ERROR",
                        "Property values were not valid",
                        {"objectWriteTraceId": [str(item["objectWriteTraceId"])]},
                    )
                )
            else:
                results.append(self._write_company(None, item.get("properties") or {}))
        return _batch_reply(201, self._shuffled(results), errors, started)

    def _update_companies(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        ids = [str(item.get("id") or "") for item in inputs]
        if not all(ids):
            return _validation_error('Invalid input JSON: every input needs an "id"')
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            return _validation_error(
                f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique"
            )
        problems = [p for item in inputs for p in self._company_problems(item.get("properties") or {})]
        if problems:
            return _values_not_valid(problems)
        results, errors = [], []
        for item, company_id in zip(inputs, ids, strict=True):
            if company_id in self.companies:
                results.append(self._write_company(self.companies[company_id], item.get("properties") or {}))
            else:
                errors.append(
                    _batch_error("OBJECT_NOT_FOUND", f"Could not find COMPANY {company_id}", {"ids": [company_id]})
                )
        return _batch_reply(200, self._shuffled(results), errors, started)

    def _upsert_companies(self, body: Any) -> _Reply:
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        id_property = next((item.get("idProperty") for item in inputs), None)
        return _validation_error(
            f'Property "{id_property}" is not a unique property of COMPANY: upsert needs a property with unique values'
        )

    # ------------------------------------------------------------------ associations

    def _pairs(self, inputs: list[dict], many_to: bool = False) -> list[tuple[str, str]] | _Reply:
        pairs = []
        for item in inputs:
            source, targets = item.get("from"), item.get("to")
            targets = targets if many_to else [targets]
            if (
                not isinstance(source, dict)
                or not isinstance(targets, list)
                or not all(isinstance(t, dict) for t in targets)
            ):
                return _validation_error('Invalid input JSON: every input needs "from" and "to" objects with an "id"')
            pairs += [(str(source.get("id")), str(target.get("id"))) for target in targets]
        return pairs

    def _unknown(self, pair: tuple[str, str], contact_ids: set[str]) -> str | None:
        contact_id, company_id = pair
        if contact_id not in contact_ids:
            return f"No CONTACT with id {contact_id}"
        if company_id not in self.companies:
            return f"No COMPANY with id {company_id}"
        return None

    def _link(self, pairs: list[tuple[str, str]], types: list[set[tuple[str, int]]]):
        contact_ids = {record["id"] for record in self.contacts.values()}
        results, errors = [], []
        for pair, wanted in zip(pairs, types, strict=True):
            problem = self._unknown(pair, contact_ids)
            if problem:  # this input alone (unverified)
                errors.append(
                    _batch_error("OBJECT_NOT_FOUND", problem, {"fromObjectId": [pair[0]], "toObjectId": [pair[1]]})
                )
                continue
            self.associations.setdefault(pair, set()).update(wanted)
            results.append(pair)
        return results, errors

    def _associate(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        pairs = self._pairs(inputs)
        if isinstance(pairs, _Reply):
            return pairs
        types = []
        for item in inputs:
            specs = {
                (str(spec.get("associationCategory")), int(spec.get("associationTypeId") or 0))
                for spec in item.get("types") or []
                if isinstance(spec, dict)
            }
            if not specs or not specs <= {UNLABELED, PRIMARY}:
                return _validation_error(
                    f"Invalid association types {sorted(specs)} from contacts to companies (unverified wording)"
                )
            types.append(specs | {UNLABELED})  # a labeled association comes with the unlabeled one
        linked, errors = self._link(pairs, types)
        results = [
            {
                "fromObjectTypeId": CONTACT_TYPE_ID,
                "fromObjectId": int(contact_id),
                "toObjectTypeId": COMPANY_TYPE_ID,
                "toObjectId": int(company_id),
                "labels": [],
            }
            for contact_id, company_id in linked
        ]
        return _batch_reply(201, results, errors, started)

    def _associate_default(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        pairs = self._pairs(inputs)
        if isinstance(pairs, _Reply):
            return pairs
        linked, errors = self._link(pairs, [{UNLABELED}] * len(pairs))
        category, type_id = UNLABELED
        results = [
            {
                "associationSpec": {"associationCategory": category, "associationTypeId": type_id},
                "from": {"id": contact_id},
                "to": {"id": company_id},
            }
            for contact_id, company_id in linked
        ]
        return _batch_reply(200, results, errors, started)

    def _dissociate(self, body: Any) -> _Reply:
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        pairs = self._pairs(inputs, many_to=True)
        if isinstance(pairs, _Reply):
            return pairs
        for pair in pairs:
            self.associations.pop(pair, None)  # every type, labels too
        return _Reply(204, {})

    # ------------------------------------------------------------------ inspection and set-up

    def companies_snapshot(self) -> dict[str, dict]:
        """A deep copy of the companies, by id."""
        with self._lock:
            return copy.deepcopy(self.companies)

    def companies_of(self, email: str) -> set[str]:
        """The ids of the companies the contact with that (primary) email is associated with."""
        with self._lock:
            record = self.contacts.get(email.strip().lower())
            contact_id = record["id"] if record else None
            return {company for (contact, company) in self.associations if contact == contact_id}

    def association_types(self, contact_id: str, company_id: str) -> set[tuple[str, int]]:
        with self._lock:
            return set(self.associations.get((str(contact_id), str(company_id)), set()))

    def add_association(self, email: str, company_id: str, spec: tuple[str, int] = UNLABELED) -> None:
        """An association made in HubSpot by someone else (a user, another integration)."""
        with self._lock:
            contact_id = self.contacts[email.strip().lower()]["id"]
            self.associations.setdefault((contact_id, str(company_id)), set()).update({spec, UNLABELED})

    def add_company(self, properties: dict[str, str]) -> str:
        """A company made in HubSpot by someone else; its id."""
        with self._lock:
            return self._write_company(None, properties)["id"]

    def request_counts(self) -> collections.Counter:
        """Requests received per path."""
        return collections.Counter(record.path for record in self._records())
