"""The dry run's outbox: the exact batch requests a sync would send, one JSON line each.

In `update_only` the contacts HubSpot gave no id yet are looked up first (batch/read lines);
which of them would then be updated only HubSpot can tell. Archives come last.

Outbox files hold personal data: they are owner-only and deleted after `ETL_OUTBOX_MAX_AGE_DAYS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from etl_assets import files, settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot.modes import CREATE_ONLY, UPDATE_ONLY, UPSERT, plan_batch
from etl_assets.hubspot.removals import Leaving
from etl_assets.hubspot.sync import MAX_BATCH, Pending, batched
from etl_assets.hubspot.writers import LOOKUP_PROPERTIES, TRACE_ID, update_input

BATCH_PATH = "/crm/v3/objects/contacts/batch/"
UPSERT_PATH = BATCH_PATH + "upsert"


@dataclass
class OutboxSummary:
    batches: int = 0  # requests written
    contacts: int = 0  # contacts they would write (or, in update_only, look up)
    looked_up: int = 0  # of those, contacts looked up by email first (update_only)
    skipped: int = 0  # contacts the mode would skip without a request (create_only: known ids)
    archived: int = 0


def _mode_requests(mode: str, batch: list[Pending]) -> tuple[list[tuple[str, dict]], int, int]:
    """The requests one batch costs in `mode`, the contacts looked up, and the contacts skipped."""
    plan = plan_batch(mode, batch)
    requests = []
    if plan.look_up:
        body = {"idProperty": "email", "inputs": [{"id": c.email} for c in plan.look_up]}
        requests.append(("read", {**body, "properties": LOOKUP_PROPERTIES, "propertiesWithHistory": []}))
    if plan.write and mode == UPSERT:
        requests.append(("upsert", {"inputs": [contact.upsert_input() for contact in plan.write]}))
    elif plan.write and mode == UPDATE_ONLY:
        requests.append(("update", {"inputs": [update_input(contact) for contact in plan.write]}))
    elif plan.write and mode == CREATE_ONLY:
        inputs = [{TRACE_ID: c.email, "properties": c.properties, "associations": []} for c in plan.write]
        requests.append(("create", {"inputs": inputs}))
    return requests, len(plan.look_up), len(plan.skipped)


def write_outbox(
    path: Path,
    to_send: Iterable[Pending],
    batch_size: int = MAX_BATCH,
    mode: str = UPSERT,
    archive: Iterable[Leaving] = (),
) -> OutboxSummary:
    """Write the requests to `path`: the contacts' batches in `mode`, then the archives."""
    files.private_dir(path.parent)
    summary = OutboxSummary()

    def write(handle, endpoint: str, body: dict) -> None:
        handle.write(json.dumps({"method": "POST", "path": BATCH_PATH + endpoint, "body": body}) + "\n")
        summary.batches += 1

    with files.open_private(path, "w", encoding="utf-8") as handle:
        for batch in batched(to_send, batch_size):
            requests, looked_up, skipped = _mode_requests(mode, batch)
            for endpoint, body in requests:
                write(handle, endpoint, body)
            summary.contacts += len(batch) - skipped
            summary.looked_up += looked_up
            summary.skipped += skipped
        for leaving in batched(archive, MAX_BATCH):
            write(handle, "archive", {"inputs": [{"id": item.hubspot_id} for item in leaving]})
            summary.archived += len(leaving)
    return summary


def max_age_days() -> float:
    """ETL_OUTBOX_MAX_AGE_DAYS: how long an outbox file is kept."""
    days = settings.float_setting(settings.OUTBOX_MAX_AGE_DAYS)
    if days < 0:
        raise PermanentError(f"{settings.OUTBOX_MAX_AGE_DAYS} must be 0 or more days, got {days:g}")
    return days


def prune_outbox(folder: Path, days: float) -> list[str]:
    """Delete the outbox files in `folder` last written more than `days` ago; returns their names."""
    if not folder.is_dir():
        return []
    cutoff = time.time() - days * 86400
    old = sorted(path for path in folder.glob("*.jsonl") if path.stat().st_mtime < cutoff)
    for path in old:
        path.unlink(missing_ok=True)
    return [path.name for path in old]
