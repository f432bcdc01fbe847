"""The company sync's dry run: the batch requests it would send, one JSON line each (like the contacts').

Ids HubSpot has not given yet (a dry run creates nothing) are written as placeholders,
`<contact a@x.com>` and `<company domain:acme.com>`, which a live run replaces with the real ids.
Outbox files hold personal data: owner-only, deleted with the contacts' after ETL_OUTBOX_MAX_AGE_DAYS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from etl_assets import files
from etl_assets.hubspot.companies_api import ARCHIVE_PATH, ASSOCIATE_PATH, CONTACT_TO_COMPANY, CREATE_PATH, UPDATE_PATH
from etl_assets.hubspot.companies_sync import AssociationWork, CompanyWork, held_pair
from etl_assets.hubspot.sync import batched


def contact_placeholder(email: str) -> str:
    return f"<contact {email}>"


def company_placeholder(key: str) -> str:
    return f"<company {key}>"


def company_requests(work: CompanyWork) -> Iterator[tuple[str, dict]]:
    for batch in batched(work.to_create):
        inputs = [
            {"objectWriteTraceId": str(i), "properties": company.properties(), "associations": []}
            for i, company in enumerate(batch)
        ]
        yield CREATE_PATH, {"inputs": inputs}
    for update in batched(work.to_update):
        yield UPDATE_PATH, {"inputs": [{"id": i, "properties": company.properties()} for i, company in update]}


def association_requests(work: AssociationWork) -> Iterator[tuple[str, dict]]:
    for batch in batched(work.to_archive):
        pairs = [pair for row in batch if (pair := held_pair(row))]
        yield ARCHIVE_PATH, {"inputs": [{"from": {"id": c}, "to": [{"id": o}]} for c, o in pairs]}
    category, type_id = CONTACT_TO_COMPANY
    for create in batched(work.to_create):
        inputs = [
            {
                "types": [{"associationCategory": category, "associationTypeId": type_id}],
                "from": {"id": want.contact_id},
                "to": {"id": want.company_id},
            }
            for want in create
        ]
        yield ASSOCIATE_PATH, {"inputs": inputs}


def write_requests(path: Path, requests: Iterator[tuple[str, dict]]) -> int:
    """Write each (path, body) as a POST line to the file `path`; returns how many."""
    files.private_dir(path.parent)
    written = 0
    with files.open_private(path, "w", encoding="utf-8") as handle:
        for endpoint, body in requests:
            handle.write(json.dumps({"method": "POST", "path": endpoint, "body": body}) + "\n")
            written += 1
    return written
