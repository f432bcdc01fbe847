"""The dry run's outbox: the exact batch requests a sync would send, one JSON line each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from etl_assets.contacts.mapping import ColumnMap
from etl_assets.hubspot.sync import MAX_BATCH, batched, upsert_input

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"


def write_outbox(path: Path, rows: Iterable[dict], column_map: ColumnMap, batch_size: int = MAX_BATCH
                 ) -> tuple[int, int]:
    """Write the batches to `path`; returns (batches, contacts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batches = contacts = 0
    with path.open("w", encoding="utf-8") as handle:
        for batch in batched(rows, batch_size):
            body = {"inputs": [upsert_input(row, column_map) for row in batch]}
            handle.write(json.dumps({"method": "POST", "path": UPSERT_PATH, "body": body}) + "\n")
            batches += 1
            contacts += len(batch)
    return batches, contacts
