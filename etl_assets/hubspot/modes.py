"""What a sync may do in HubSpot: its mode (HUBSPOT_SYNC_MODE) and how it plans each batch.

`upsert` creates or updates by email; `update_only` never creates (contacts HubSpot does not
know are skipped); `create_only` never changes an existing contact (those are skipped). Plain
decisions, no I/O: hubspot/writers.py sends what the plan says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot.sync import ContactOutcome, Pending

UPSERT = "upsert"
UPDATE_ONLY = "update_only"
CREATE_ONLY = "create_only"
SYNC_MODES = (UPSERT, UPDATE_ONLY, CREATE_ONLY)

# Why a contact was skipped (hubspot_sync_state.skip_reason): each mode skips for one reason only.
NOT_IN_HUBSPOT = "NOT_IN_HUBSPOT"  # update_only: no contact has this email (or the id we knew is gone)
EXISTS_IN_HUBSPOT = "EXISTS_IN_HUBSPOT"  # create_only: a contact with this email exists already
SKIP_REASONS = {UPDATE_ONLY: NOT_IN_HUBSPOT, CREATE_ONLY: EXISTS_IN_HUBSPOT}


def choice(name: str, choices: tuple[str, ...]) -> str:
    """The setting `name`, which must be one of `choices`; an error names the variable, value and choices."""
    value = (settings.setting(name) or "").strip().lower()
    if value not in choices:
        raise PermanentError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def sync_mode() -> str:
    return choice(settings.HUBSPOT_SYNC_MODE, SYNC_MODES)


def skipped(contact: Pending, reason: str, hubspot_id: str | None = None) -> ContactOutcome:
    return ContactOutcome(contact.email, contact.content_hash, "skipped", hubspot_id=hubspot_id, skip_reason=reason)


@dataclass
class BatchPlan:
    """One batch split by what its contacts need: written now, looked up by email first, or skipped."""

    write: list[Pending] = field(default_factory=list)
    look_up: list[Pending] = field(default_factory=list)
    skipped: list[ContactOutcome] = field(default_factory=list)


def plan_batch(mode: str, batch: list[Pending]) -> BatchPlan:
    """`update_only` writes by the id HubSpot gave a contact before and looks the others up;
    `create_only` skips every contact HubSpot gave an id before, without asking it."""
    plan = BatchPlan()
    for contact in batch:
        if mode == UPSERT:
            plan.write.append(contact)
        elif mode == UPDATE_ONLY:
            (plan.write if contact.hubspot_id else plan.look_up).append(contact)
        elif contact.hubspot_id:
            plan.skipped.append(skipped(contact, EXISTS_IN_HUBSPOT, contact.hubspot_id))
        else:
            plan.write.append(contact)
    return plan
