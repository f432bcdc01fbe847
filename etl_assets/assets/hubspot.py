"""`hubspot_contacts`: contacts written to HubSpot as HUBSPOT_SYNC_MODE says, only those that changed
since HubSpot accepted them; contacts that left the source kept or archived (HUBSPOT_ON_REMOVED).

Decisions live in etl_assets/hubspot/ (modes, removals, sync); this asset composes them: it plans
the removals and applies their guard before any request, syncs, then archives.
"""

import logging
from collections.abc import Iterator
from typing import Any

import dagster as dg
import sqlalchemy as sa

from etl_assets import settings
from etl_assets.assets.contacts import contacts_table
from etl_assets.assets.policies import step_retry_policy
from etl_assets.contacts.mapping import ColumnMap, load_column_map
from etl_assets.errors import PermanentError, TransientError, failing_fast
from etl_assets.hubspot import companies_state, modes, property_cache, removals, state, writers
from etl_assets.hubspot.client import HubSpotApi, HubSpotApiError
from etl_assets.hubspot.errors import PropertyRefused
from etl_assets.hubspot.outbox import max_age_days, prune_outbox, write_outbox
from etl_assets.hubspot.properties import PropertyDefinition, PropertyWriter, declared, mapping_problems
from etl_assets.hubspot.removals import RemovalPlan
from etl_assets.hubspot.sync import MAX_UNMATCHED_RUNS, UNMATCHED, Pending, SyncReport, prevalidate, sync_contacts
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource, SyncMode

SYNC_LOCK = "etl_assets.hubspot_contacts"


def account_properties(
    api: HubSpotApi, column_map: ColumnMap, create: bool, log: logging.Logger
) -> dict[str, PropertyDefinition]:
    """The account's definitions of the mapped properties, creating the custom ones it lacks.

    Fails before any contact is sent, naming each property, when one is missing (and may not be
    created) or cannot take the map's field whatever the contact: read-only, calculated, or of
    another type. One request when every property is in place.
    """
    definitions = api.contact_properties()
    problems = [problem for problem in mapping_problems(column_map, definitions, create).values() if problem]
    if problems:
        raise PermanentError(
            "; ".join(problems) + f". Change the column map ({column_map.origin}) or the "
            "properties in HubSpot; the preflight job lists every such problem"
        )
    for spec in column_map.hubspot_fields:
        missing = declared(spec)
        if missing.name not in definitions:
            log.info("HubSpot: creating contact property %s (%s)", missing.name, missing.type)
            definitions[missing.name] = api.create_contact_property(
                missing.name, spec.hubspot_label or spec.source, missing.type
            )
    return definitions


def current_properties(
    api: HubSpotApi, engine: sa.Engine, column_map: ColumnMap, create: bool, max_age_s: int, log: logging.Logger
) -> tuple[dict[str, PropertyDefinition], property_cache.Listing | None]:
    """The mapped properties' definitions, and the stored listing they came from (None: listed now).

    A stored listing `property_cache.why_not_reuse` accepts costs no request; otherwise the
    properties are listed (and created) by `account_properties`, and the result is stored.
    """
    at = companies_state.now()
    listing = property_cache.stored(engine, api.account_key) if max_age_s else None
    reason = property_cache.why_not_reuse(listing, column_map, max_age_s, at)
    if listing is not None and reason is None:
        log.info(
            "HubSpot: property definitions from the listing of %s UTC, %.0f s old; no request",
            listing.listed_at,
            listing.age_seconds(at),
        )
        return listing.definitions, listing
    log.info("HubSpot: listing the contact properties (%s)", reason)
    definitions = account_properties(api, column_map, create, log)
    property_cache.store(engine, api.account_key, column_map, definitions, at)
    return definitions, None


def _refused_after_listing(
    exc: PropertyRefused, engine: sa.Engine, api: HubSpotApi, reused: property_cache.Listing | None
) -> Exception:
    """What a refused property fails the step with, once the stored listing is dropped.

    The property may have changed in HubSpot since the listing: the next attempt lists again. When
    the sync used a stored listing, that attempt is the step's retry (HubSpot's current definitions
    may fix it, or name the problem); after a fresh listing the refusal stands.
    """
    property_cache.forget(engine, api.account_key)
    if reused is None:
        return exc
    return TransientError(
        f"{exc}; the sync used the stored property listing of {reused.listed_at} UTC, now dropped: "
        "the step's retry lists the properties again"
    )


PREVIEW_ROWS = 100  # contacts listed in the metadata's archive preview; the outbox lists them all


def _plan_removals(conn: sa.Connection, policy: str) -> RemovalPlan:
    """What happens to the contacts that left the source; an archive the guard refuses fails here,
    before any request."""
    plan = removals.plan_removals(state.left_source(conn), policy)
    if plan.archive:
        contacts, last_load_valid = state.source_size(conn)
        removals.check_archive(
            len(plan.archive),
            state.count_written(conn, removals.OURS),
            contacts,
            last_load_valid,
            removals.max_archive_fraction(),
        )
    return plan


def _archive_preview(plan: RemovalPlan) -> dg.MetadataValue:
    rows = "\n".join(f"| {item.email} | {item.hubspot_id} |" for item in plan.archive[:PREVIEW_ROWS])
    more = f"\n\n…and {len(plan.archive) - PREVIEW_ROWS:,} more" if len(plan.archive) > PREVIEW_ROWS else ""
    return dg.MetadataValue.md(f"| email | HubSpot id |\n|---|---|\n{rows}{more}")


def _removal_metadata(plan: RemovalPlan, policy: str, archived: int, gone: int, dry: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "on_removed": policy,
        ("would_mark_removed" if dry else "removed"): dg.MetadataValue.int(len(plan.mark_removed)),
        "removed_before": dg.MetadataValue.int(plan.already_removed),
    }
    if dry:
        metadata["would_archive"] = dg.MetadataValue.int(len(plan.archive))
    else:
        metadata["archived"] = dg.MetadataValue.int(archived)
        metadata["archive_already_gone"] = dg.MetadataValue.int(gone)
    if plan.archive:
        metadata["archive_preview"] = _archive_preview(plan)
    return metadata


def _dry_run(
    context: dg.AssetExecutionContext,
    engine: sa.Engine,
    column_map: ColumnMap,
    due: int,
    mode: SyncMode,
    sync_mode: str,
    removal: RemovalPlan,
    policy: str,
):
    folder = settings.data_dir() / "hubspot_outbox"
    days = max_age_days()
    removed = prune_outbox(folder, days)
    if removed:
        context.log.info(
            "HubSpot dry run: removed %d outbox file(s) older than %g days: %s", len(removed), days, ", ".join(removed)
        )
    outbox = folder / f"{context.run.run_id}.jsonl"
    # Converted by the types the map declares: a dry run reads nothing from HubSpot.
    report = SyncReport(due=due)
    to_send = _contacts_to_send(engine, PropertyWriter(column_map), report, None, sync_mode)
    sent = write_outbox(outbox, to_send, mode=sync_mode, archive=removal.archive)
    return dg.MaterializeResult(
        metadata={
            "summary": (
                f"Dry run ({sync_mode}): {sent.contacts} contacts in {sent.batches} requests written to the outbox, "
                f"{report.failed} refused before sending, {sent.skipped} would be skipped, "
                f"{len(removal.archive)} would be archived; nothing was sent."
            ),
            **mode.metadata(),
            "sync_mode": sync_mode,
            "outbox": dg.MetadataValue.path(str(outbox)),
            "would_send_contacts": dg.MetadataValue.int(sent.contacts),
            "would_send_batches": dg.MetadataValue.int(sent.batches),
            "would_look_up": dg.MetadataValue.int(sent.looked_up),
            "would_skip": dg.MetadataValue.int(sent.skipped),
            "would_refuse": dg.MetadataValue.int(report.failed),
            "due": dg.MetadataValue.int(due),
            **_removal_metadata(removal, policy, 0, 0, dry=True),
        }
    )


def _contacts_to_send(engine, writer: PropertyWriter, report: SyncReport, record, sync_mode: str) -> Iterator[Pending]:
    """Due contacts as HubSpot takes them; those refused before sending are recorded (unless a dry run).

    A property that takes none of the values stops the sync before anything of that page is
    recorded: the map or the account is wrong, not every contact.
    """
    for page in state.due_contacts(engine, writer.column_map, modes.SKIP_REASONS.get(sync_mode)):
        accepted, refused = prevalidate(page, writer)
        throughout = writer.refused_throughout()
        if throughout:
            name, code, values = throughout
            raise PropertyRefused(
                f"HubSpot property {name!r} takes none of the {values} values it was given ({code}): change the "
                f"column map ({writer.column_map.origin}) or the property in HubSpot; hubspot_sync_state is unchanged"
            )
        if record is not None:
            record(refused)
        report.add(refused)
        yield from accepted


@dg.asset(
    deps=[contacts_table],
    group_name="contacts",
    kinds={"hubspot"},
    pool="etl_assets_hubspot_sync",
    retry_policy=step_retry_policy(),
    description="HubSpot contacts written from `contacts` as HUBSPOT_SYNC_MODE says (upsert by email by "
    "default), those that left kept or archived as HUBSPOT_ON_REMOVED says; per-contact outcomes in "
    "`hubspot_sync_state`. A dry run to a JSONL outbox when HUBSPOT_DRY_RUN=true or "
    "nothing is configured.",
)
def hubspot_contacts(
    context: dg.AssetExecutionContext, database: DatabaseResource, hubspot: HubSpotResource
) -> dg.MaterializeResult:
    log = context.log
    with failing_fast("hubspot_contacts"):
        mode = hubspot.mode()
        sync_mode, policy = modes.sync_mode(), removals.on_removed()
        properties_max_age = property_cache.max_age_seconds()
        log.info("HubSpot: %s (%s)", mode.name, mode.reason)
        log.info("HubSpot sync mode: %s; contacts that left the source: %s", sync_mode, policy)
        column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
        engine = database.engine
        run_id = context.run.run_id
        state.ensure_table(engine)
        property_cache.ensure_table(engine)
        with database.exclusive(SYNC_LOCK):
            with engine.connect() as conn:
                due = state.count_due(conn, modes.SKIP_REASONS.get(sync_mode))
                removal = _plan_removals(conn, policy)
            if not mode.live:
                return _dry_run(context, engine, column_map, due, mode, sync_mode, removal, policy)
            report = SyncReport(due=due)
            api = hubspot.open_api(log)
            archived = gone = 0
            reused: property_cache.Listing | None = None
            try:
                if due:
                    record = lambda outcomes: state.record_outcomes(engine, outcomes, run_id)  # noqa: E731
                    definitions, reused = current_properties(
                        api, engine, column_map, hubspot.may_create_properties(), properties_max_age, log
                    )
                    sync_contacts(
                        api,
                        _contacts_to_send(engine, PropertyWriter(column_map, definitions), report, record, sync_mode),
                        record,
                        report,
                        log,
                        max_in_flight=hubspot.in_flight(),
                        send=writers.batch_sender(sync_mode, api, report),
                    )
                else:
                    log.info("HubSpot: every contact is in step; no contact requests sent")
                state.mark_left(engine, removal.mark_removed, state.REMOVED, run_id)
                if removal.archive and not report.stopped_reason:
                    archived, gone = writers.archive(
                        api,
                        removal.archive,
                        lambda done: state.mark_left(engine, [item.email for item in done], state.ARCHIVED, run_id),
                    )
            except PropertyRefused as exc:
                raise _refused_after_listing(exc, engine, api, reused) from None
            except HubSpotApiError as exc:
                if exc.error.missing_scopes:
                    raise PermanentError(
                        f"HubSpot's private app lacks the scope(s) {list(exc.error.missing_scopes)} "
                        f"({exc.error.status} {exc.error.category}); add them to the app (Settings > "
                        "Integrations > Private apps > Scopes; the README lists every scope the sync "
                        "uses)"
                    ) from None
                if exc.error.is_auth_error:
                    # batches in flight were recorded before the error came up: the count is exact
                    synced = report.created + report.updated
                    outcome = (
                        f" after {synced:,} contacts were synced in this run; the rest stay pending for the next run"
                        if synced
                        else "; nothing was marked synced in this run"
                    )
                    raise PermanentError(
                        f"HubSpot rejected the access token ({exc.error.summary()}){outcome}"
                    ) from None
                raise
    if report.stopped_reason:
        log.warning(
            "HubSpot sync stopped early: %s; %d contacts stay pending for the next run%s",
            report.stopped_reason,
            report.pending,
            f", and {len(removal.archive)} archives wait for it too" if removal.archive else "",
        )
    isolation_stopped = (
        f"isolation stopped at its cap ({report.isolation_requests} requests): {report.unisolated} "
        "contacts of refused batches stay pending for the next run"
        if report.unisolated
        else None
    )
    if isolation_stopped:
        log.warning("HubSpot: %s", isolation_stopped)
    if report.failure_reasons[UNMATCHED]:
        log.warning(
            "HubSpot: %d contacts got no result that could be told to be theirs (merged or looked up by "
            "another address?); each is sent on up to %d runs, then stays failed in hubspot_sync_state",
            report.failure_reasons[UNMATCHED],
            MAX_UNMATCHED_RUNS,
        )
    metadata: dict[str, Any] = {
        "summary": (
            f"{report.created} created, {report.updated} updated, {report.skipped} skipped, {report.failed} failed, "
            f"{report.pending} pending, {len(removal.mark_removed)} marked removed, {archived} archived, "
            f"in {api.calls} API calls"
        ),
        **mode.metadata(),
        "sync_mode": sync_mode,
        "due": dg.MetadataValue.int(report.due),
        "created": dg.MetadataValue.int(report.created),
        "updated": dg.MetadataValue.int(report.updated),
        "skipped": dg.MetadataValue.int(report.skipped),
        "failed": dg.MetadataValue.int(report.failed),
        "pending": dg.MetadataValue.int(report.pending),
        "batches": dg.MetadataValue.int(report.batches),
        "split_batches": dg.MetadataValue.int(report.split_batches),
        "isolation_requests": dg.MetadataValue.int(report.isolation_requests),
        # contacts HubSpot answered for under another primary email: merged into another, or found
        # by a secondary email; recorded with the id HubSpot gave
        "merged": dg.MetadataValue.int(report.other_address["merged"]),
        "secondary_email": dg.MetadataValue.int(report.other_address["secondary_email"]),
        "api_calls": dg.MetadataValue.int(api.calls),
        "rate_limited_429": dg.MetadataValue.int(api.rate_limited),
        "retried_requests": dg.MetadataValue.int(api.retried),
    }
    metadata.update(_removal_metadata(removal, policy, archived, gone, dry=False))
    if report.skip_reasons:
        metadata["skip_reasons"] = dg.MetadataValue.json(dict(report.skip_reasons))
    if report.stopped_reason:
        metadata["stopped_reason"] = report.stopped_reason
    if isolation_stopped:
        metadata["isolation_stopped"] = isolation_stopped
    if report.failure_reasons:
        rows = "\n".join(f"| {reason} | {count} |" for reason, count in report.failure_reasons.most_common())
        metadata["failure_reasons"] = dg.MetadataValue.md(f"| reason | contacts |\n|---|---|\n{rows}")
    return dg.MaterializeResult(metadata=metadata)
