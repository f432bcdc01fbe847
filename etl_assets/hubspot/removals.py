"""Contacts that left the source (HUBSPOT_ON_REMOVED): kept in HubSpot, or archived, within a guard.

A contact has left when `hubspot_sync_state` knows it and `contacts` no longer holds it (the
loader deletes such rows, within its own ETL_MAX_DELETE_FRACTION guard). `keep` only marks it
`removed` in `hubspot_sync_state`. `archive` archives (HubSpot's restorable delete) the ones this
sync created or last wrote, never one it skipped, failed to write, or found under another
contact's email (merged, secondary email): that record is someone else's. The guard mirrors the
loader's: never more than HUBSPOT_MAX_ARCHIVE_FRACTION of our contacts in HubSpot per run, never
on an empty source. Plain decisions; the asset queries and sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot.modes import choice
from etl_assets.hubspot.state import LAST_WRITE, REMOVED

KEEP = "keep"
ARCHIVE = "archive"
ON_REMOVED = (KEEP, ARCHIVE)
OURS = ("created", "updated")  # writes that make a HubSpot contact this sync's to archive


def on_removed() -> str:
    return choice(settings.HUBSPOT_ON_REMOVED, ON_REMOVED)


def max_archive_fraction() -> float:
    fraction = settings.float_setting(settings.HUBSPOT_MAX_ARCHIVE_FRACTION)
    if not 0 <= fraction <= 1:
        raise PermanentError(f"{settings.HUBSPOT_MAX_ARCHIVE_FRACTION} must be between 0 and 1, got {fraction:g}")
    return fraction


@dataclass(frozen=True)
class Leaving:
    email: str
    hubspot_id: str


@dataclass
class RemovalPlan:
    archive: list[Leaving] = field(default_factory=list)  # in email order
    mark_removed: list[str] = field(default_factory=list)  # emails newly marked `removed`
    already_removed: int = 0  # marked in an earlier run; nothing more to do


def plan_removals(left: list[dict], policy: str) -> RemovalPlan:
    """What to do with the `hubspot_sync_state` rows (email, hubspot_id, status, last_write) of
    contacts that left the source. Switching from `keep` to `archive` archives the ones kept before."""
    plan = RemovalPlan()
    for row in left:
        if policy == ARCHIVE and row["hubspot_id"] and row[LAST_WRITE] in OURS:
            plan.archive.append(Leaving(row["email"], str(row["hubspot_id"])))
        elif row["status"] == REMOVED:
            plan.already_removed += 1
        else:
            plan.mark_removed.append(row["email"])
    return plan


def check_archive(
    to_archive: int, ours: int, source_contacts: int, last_load_valid: int | None, fraction: float
) -> None:
    """Refuse an archive of `to_archive` of the `ours` contacts this sync wrote to HubSpot when the
    source is empty or held no valid row, or when it is more than `fraction` of them."""
    if not to_archive:
        return
    if not source_contacts or last_load_valid == 0:
        source = "empty" if not source_contacts else "all rejected by validation"
        raise PermanentError(
            f"refusing to archive {to_archive:,} HubSpot contacts: the source is {source}, which looks like a "
            "broken download rather than contacts that left; nothing was archived"
        )
    if to_archive > fraction * ours:
        raise PermanentError(
            f"refusing to archive {to_archive:,} of the {ours:,} HubSpot contacts this sync wrote "
            f"({to_archive / ours:.0%}), more than {settings.HUBSPOT_MAX_ARCHIVE_FRACTION}={fraction:g} allows; "
            "nothing was archived or sent. If they really left the source, run once with "
            f"{settings.HUBSPOT_MAX_ARCHIVE_FRACTION} raised (up to 1), or with {settings.HUBSPOT_DRY_RUN}=true "
            "and the fraction raised to see which would go"
        )
