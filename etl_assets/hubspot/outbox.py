"""The dry run's outbox: the exact batch requests a sync would send, one JSON line each.

Outbox files hold personal data: they are owner-only and deleted after `ETL_OUTBOX_MAX_AGE_DAYS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from etl_assets import files, settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot.sync import MAX_BATCH, Pending, batched

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"


def write_outbox(path: Path, to_send: Iterable[Pending], batch_size: int = MAX_BATCH) -> tuple[int, int]:
    """Write the batches to `path`; returns (batches, contacts)."""
    files.private_dir(path.parent)
    batches = contacts = 0
    with files.open_private(path, "w", encoding="utf-8") as handle:
        for batch in batched(to_send, batch_size):
            body = {"inputs": [contact.upsert_input() for contact in batch]}
            handle.write(json.dumps({"method": "POST", "path": UPSERT_PATH, "body": body}) + "\n")
            batches += 1
            contacts += len(batch)
    return batches, contacts


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
