"""`hubspot_contacts`: contacts upserted into HubSpot, only those that changed since HubSpot accepted them."""

import itertools
import logging
from typing import Iterator

import dagster as dg
import sqlalchemy as sa

from etl_assets import settings
from etl_assets.assets.contacts import contacts_table
from etl_assets.assets.policies import step_retry_policy
from etl_assets.contacts import schema
from etl_assets.contacts.mapping import ColumnMap, load_column_map
from etl_assets.errors import PermanentError, failing_fast
from etl_assets.hubspot import state
from etl_assets.hubspot.client import HubSpotApi, HubSpotApiError
from etl_assets.hubspot.outbox import max_age_days, prune_outbox, write_outbox
from etl_assets.hubspot.sync import SyncReport, prevalidate, sync_contacts
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource, SyncMode

SYNC_LOCK = "etl_assets.hubspot_contacts"


def ensure_properties(api: HubSpotApi, column_map: ColumnMap, create: bool, log: logging.Logger) -> set[str]:
    """Create the custom properties the mapping names and the account lacks, or fail naming them."""
    known = api.contact_property_names()
    missing = [spec for spec in column_map.hubspot_fields if spec.hubspot not in known]
    if missing and not create:
        raise PermanentError(
            f"HubSpot lacks the contact properties {[spec.hubspot for spec in missing]} that the column map "
            f"({column_map.origin}) sends; create them or set {settings.HUBSPOT_CREATE_PROPERTIES}=true")
    for spec in missing:
        log.info("HubSpot: creating contact property %s (%s)", spec.hubspot, spec.type)
        api.create_contact_property(spec.hubspot, spec.hubspot_label or spec.source, spec.type)
        known.add(spec.hubspot)
    return known


def _dry_run(context: dg.AssetExecutionContext, engine: sa.Engine, column_map: ColumnMap, due: int,
             mode: SyncMode):
    folder = settings.data_dir() / "hubspot_outbox"
    days = max_age_days()
    removed = prune_outbox(folder, days)
    if removed:
        context.log.info("HubSpot dry run: removed %d outbox file(s) older than %g days: %s",
                         len(removed), days, ", ".join(removed))
    outbox = folder / f"{context.run.run_id}.jsonl"
    rows = itertools.chain.from_iterable(state.due_contacts(engine, column_map))
    batches, contacts = write_outbox(outbox, rows, column_map)
    return dg.MaterializeResult(metadata={
        "summary": f"Dry run: {contacts} contacts in {batches} batches written to the outbox; nothing was sent.",
        **mode.metadata(),
        "outbox": dg.MetadataValue.path(str(outbox)),
        "would_send_contacts": dg.MetadataValue.int(contacts),
        "would_send_batches": dg.MetadataValue.int(batches),
        "due": dg.MetadataValue.int(due),
    })


def _rows_to_send(engine, column_map, known, report: SyncReport, record) -> Iterator[dict]:
    for page in state.due_contacts(engine, column_map):
        accepted, refused = prevalidate(page, known, column_map)
        record(refused)
        report.add(refused)
        yield from accepted


@dg.asset(
    deps=[contacts_table],
    group_name="contacts",
    kinds={"hubspot"},
    pool="etl_assets_hubspot_sync",
    retry_policy=step_retry_policy(),
    description="HubSpot contacts upserted by email from `contacts`; per-contact outcomes in "
                "`hubspot_sync_state`. A dry run to a JSONL outbox when HUBSPOT_DRY_RUN=true or "
                "nothing is configured.",
)
def hubspot_contacts(
    context: dg.AssetExecutionContext, database: DatabaseResource, hubspot: HubSpotResource
) -> dg.MaterializeResult:
    log = context.log
    with failing_fast("hubspot_contacts"):
        mode = hubspot.mode()
        log.info("HubSpot: %s (%s)", mode.name, mode.reason)
        column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
        engine = database.engine
        schema.sync_state_table().create(engine, checkfirst=True)
        with database.exclusive(SYNC_LOCK):
            with engine.connect() as conn:
                due = state.count_due(conn)
            if not mode.live:
                return _dry_run(context, engine, column_map, due, mode)
            report = SyncReport(due=due)
            api = hubspot.open_api(log)
            if due:
                record = lambda outcomes: state.record_outcomes(engine, outcomes, context.run.run_id)  # noqa: E731
                try:
                    known = ensure_properties(api, column_map, hubspot.may_create_properties(), log)
                    sync_contacts(api, _rows_to_send(engine, column_map, known, report, record), column_map,
                                  record, report, log, max_in_flight=hubspot.in_flight())
                except HubSpotApiError as exc:
                    if exc.error.missing_scopes:
                        raise PermanentError(
                            f"HubSpot's private app lacks the scope(s) {list(exc.error.missing_scopes)} "
                            f"({exc.error.status} {exc.error.category}); add them to the app (Settings > "
                            "Integrations > Private apps > Scopes; the README lists every scope the sync "
                            "uses)") from None
                    if exc.error.is_auth_error:
                        # batches in flight were recorded before the error came up: the count is exact
                        synced = report.created + report.updated
                        outcome = (f" after {synced:,} contacts were synced in this run; the rest stay pending "
                                   "for the next run" if synced else "; nothing was marked synced in this run")
                        raise PermanentError(
                            f"HubSpot rejected the access token ({exc.error.summary()}){outcome}") from None
                    raise
            else:
                log.info("HubSpot: every contact is in step; no requests sent")
    if report.stopped_reason:
        log.warning("HubSpot sync stopped early: %s; %d contacts stay pending for the next run",
                    report.stopped_reason, report.pending)
    isolation_stopped = (f"isolation stopped at its cap ({report.isolation_requests} requests): {report.unisolated} "
                         "contacts of refused batches stay pending for the next run" if report.unisolated else None)
    if isolation_stopped:
        log.warning("HubSpot: %s", isolation_stopped)
    metadata = {
        "summary": (f"{report.created} created, {report.updated} updated, {report.failed} failed, "
                    f"{report.pending} pending, in {api.calls} API calls"),
        **mode.metadata(),
        "due": dg.MetadataValue.int(report.due),
        "created": dg.MetadataValue.int(report.created),
        "updated": dg.MetadataValue.int(report.updated),
        "failed": dg.MetadataValue.int(report.failed),
        "pending": dg.MetadataValue.int(report.pending),
        "batches": dg.MetadataValue.int(report.batches),
        "split_batches": dg.MetadataValue.int(report.split_batches),
        "isolation_requests": dg.MetadataValue.int(report.isolation_requests),
        "api_calls": dg.MetadataValue.int(api.calls),
        "rate_limited_429": dg.MetadataValue.int(api.rate_limited),
        "retried_requests": dg.MetadataValue.int(api.retried),
    }
    if report.stopped_reason:
        metadata["stopped_reason"] = report.stopped_reason
    if isolation_stopped:
        metadata["isolation_stopped"] = isolation_stopped
    if report.failure_reasons:
        rows = "\n".join(f"| {reason} | {count} |" for reason, count in report.failure_reasons.most_common())
        metadata["failure_reasons"] = dg.MetadataValue.md(f"| reason | contacts |\n|---|---|\n{rows}")
    return dg.MaterializeResult(metadata=metadata)
