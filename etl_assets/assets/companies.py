"""`hubspot_companies` and `hubspot_contact_companies`: the contacts' companies, and who works where.

Opt-in (HUBSPOT_COMPANIES=true). Off, both assets still run in `daily_etl` but send nothing and
say so in their metadata: whether they ran is a setting read when the run starts, not when the
code location loads, so the job cannot leave them out by it. Companies come from the columns the
column map marks `company: name` / `company: domain`, keyed as HUBSPOT_COMPANY_KEY says
(etl_assets/hubspot/companies_keys.py); only new or changed companies and associations are sent.
Both steps share the contacts' HubSpot pool and rate window (`HubSpotResource.open_api`).
"""

from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from etl_assets import settings
from etl_assets.assets.contacts import contacts_table
from etl_assets.assets.hubspot import hubspot_contacts
from etl_assets.assets.policies import step_retry_policy
from etl_assets.contacts.mapping import load_column_map
from etl_assets.errors import PermanentError, failing_fast
from etl_assets.hubspot import companies_outbox, companies_state
from etl_assets.hubspot.client import HubSpotApi
from etl_assets.hubspot.companies_api import CrmObjectsApi
from etl_assets.hubspot.companies_keys import CompanyPlan, key_mode, plan_companies
from etl_assets.hubspot.companies_sync import (
    Report,
    Wanted,
    due_associations,
    due_companies,
    sync_associations,
    sync_companies,
)
from etl_assets.hubspot.errors import HubSpotApiError
from etl_assets.hubspot.outbox import max_age_days, prune_outbox
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.hubspot import HubSpotResource, SyncMode
from etl_assets.text import preview_markdown

COMPANIES_LOCK = "etl_assets.hubspot_companies"
POOL = "etl_assets_hubspot_sync"  # the contacts sync's: one HubSpot step at a time (dagster.yaml)
OFF = f"Companies are off ({settings.HUBSPOT_COMPANIES}=false): nothing read or sent"


def companies_enabled() -> bool:
    return settings.bool_setting(settings.HUBSPOT_COMPANIES)


def _off() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"summary": OFF, "enabled": False, "api_calls": dg.MetadataValue.int(0)})


def _plan(engine: sa.Engine) -> tuple[CompanyPlan, dict[str, str | None], str]:
    """The companies, each contact's HubSpot id (None if it has none yet), and the key mode."""
    column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
    if not (column_map.company_field("name") or column_map.company_field("domain")):
        raise PermanentError(
            f"{settings.HUBSPOT_COMPANIES}=true but the column map ({column_map.origin}) marks no company column: "
            "add `company: name` and/or `company: domain` to the company's name and website entries"
        )
    mode = key_mode(settings.setting(settings.HUBSPOT_COMPANY_KEY))
    contact_ids: dict[str, str | None] = {}

    def rows():
        for row in companies_state.contact_rows(engine, column_map):
            contact_ids[row.email] = row.contact_id
            yield row.email, row.name, row.website

    return plan_companies(rows(), mode), contact_ids, mode


def _open(hubspot: HubSpotResource, log) -> tuple[HubSpotApi, CrmObjectsApi]:
    api = hubspot.open_api(log)  # its limiter shares the account's window with the other HubSpot steps
    return api, CrmObjectsApi(api)


def _refused(exc: HubSpotApiError, what: str) -> Exception:
    """A clear permanent error for a missing scope or a rejected token; else `exc` as it is."""
    if exc.error.missing_scopes:
        return PermanentError(
            f"HubSpot's private app lacks the scope(s) {list(exc.error.missing_scopes)} needed for {what} "
            f"({exc.error.status} {exc.error.category}); add them to the app (Settings > Integrations > Private "
            "apps > Scopes)"
        )
    if exc.error.is_auth_error:
        return PermanentError(f"HubSpot rejected the access token ({exc.error.summary()}) while syncing {what}")
    return exc


def _outbox(context: dg.AssetExecutionContext, name: str, requests) -> tuple[str, int]:
    folder = settings.data_dir() / "hubspot_outbox"
    removed = prune_outbox(folder, max_age_days())
    if removed:
        context.log.info("HubSpot dry run: removed %d old outbox file(s): %s", len(removed), ", ".join(removed))
    path = folder / f"{context.run.run_id}.{name}.jsonl"
    return str(path), companies_outbox.write_requests(path, requests)


def _preview(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    frame = pd.DataFrame([{column: row.get(column) for column in columns} for row in rows], columns=columns)
    return dg.MetadataValue.md(preview_markdown(frame))


def _counts(report: Report, api: HubSpotApi | None, mode: SyncMode, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        **mode.metadata(),
        "enabled": True,
        **{name: dg.MetadataValue.int(value) for name, value in extra.items()},
        "unchanged": dg.MetadataValue.int(report.unchanged),
        "failed": dg.MetadataValue.int(report.outcomes["failed"]),
        "batches": dg.MetadataValue.int(report.batches),
        "api_calls": dg.MetadataValue.int(api.calls if api else 0),
        "rate_limited_429": dg.MetadataValue.int(api.rate_limited if api else 0),
    }
    if report.failure_reasons:
        rows = "\n".join(f"| {reason} | {count} |" for reason, count in report.failure_reasons.most_common())
        metadata["failure_reasons"] = dg.MetadataValue.md(f"| reason | count |\n|---|---|\n{rows}")
    return metadata


@dg.asset(
    deps=[contacts_table],
    group_name="contacts",
    kinds={"hubspot"},
    pool=POOL,
    retry_policy=step_retry_policy(),
    description="HubSpot companies from the contacts' company name and website columns (HUBSPOT_COMPANIES=true), "
    "de-duplicated by domain, else normalised name; created or updated only when changed. Outcomes in "
    "`hubspot_company_state`.",
)
def hubspot_companies(
    context: dg.AssetExecutionContext, database: DatabaseResource, hubspot: HubSpotResource
) -> dg.MaterializeResult:
    log = context.log
    with failing_fast("hubspot_companies"):
        if not companies_enabled():
            log.info("HubSpot: %s", OFF)
            return _off()
        mode = hubspot.mode()
        engine = database.engine
        companies_state.ensure_tables(engine)
        with database.exclusive(COMPANIES_LOCK):
            plan, _contact_ids, key = _plan(engine)
            states = companies_state.company_states(engine)
            work = due_companies(plan.companies, states)
            report = Report(unchanged=work.unchanged)
            api = None
            outbox = None
            if not mode.live:
                outbox = _outbox(context, "companies", companies_outbox.company_requests(work))
            elif work.to_create or work.to_update:
                api, crm = _open(hubspot, log)

                def record(rows: list[dict]) -> None:
                    companies_state.upsert_rows(
                        engine,
                        companies_state.company_state_table(),
                        [_company_state(r, states, context) for r in rows],
                    )

                try:
                    sync_companies(crm, work, record, report)
                except HubSpotApiError as exc:
                    raise _refused(exc, "companies") from None
            else:
                log.info("HubSpot: every company is in step; no requests sent")
    created, updated = report.outcomes["created"], report.outcomes["updated"]
    if outbox:
        summary = (
            f"Dry run: {len(work.to_create)} companies to create and {len(work.to_update)} to update, in "
            f"{outbox[1]} requests written to the outbox; nothing was sent."
        )
    else:
        summary = (
            f"{len(plan.companies)} companies: {created} created, {updated} updated, {work.unchanged} unchanged, "
            f"{report.outcomes['failed']} failed, in {api.calls if api else 0} API calls"
        )
    metadata = {
        "summary": summary,
        **_counts(
            report,
            api,
            mode,
            companies=len(plan.companies),
            contacts_with_company=len(plan.members),
            created=created,
            updated=updated,
        ),
        "company_key": key,
        # this run's first outcomes, else (nothing sent) the first companies
        "preview": _preview(
            report.preview or [{"company_key": c.key, **c.properties()} for c in list(plan.companies.values())[:10]],
            ["company_key", "name", "domain", "hubspot_id", "outcome", "error_category"],
        ),
    }
    if outbox:
        metadata.update(
            outbox=dg.MetadataValue.path(outbox[0]),
            would_create=dg.MetadataValue.int(len(work.to_create)),
            would_update=dg.MetadataValue.int(len(work.to_update)),
            would_send_batches=dg.MetadataValue.int(outbox[1]),
        )
    return dg.MaterializeResult(metadata=metadata)


def _company_state(row: dict, states: dict[str, dict], context: dg.AssetExecutionContext) -> dict:
    """A company's state row from its outcome; a failure keeps what HubSpot last accepted."""
    before = states.get(row["company_key"]) or {}
    synced = row["outcome"] != "failed"
    return {
        "company_key": row["company_key"],
        "name": row["name"],
        "domain": row["domain"],
        "hubspot_id": row["hubspot_id"],
        "status": "synced" if synced else "failed",
        "synced_hash": row["content_hash"] if synced else before.get("synced_hash"),
        "attempted_hash": row["content_hash"],
        "last_outcome": row["outcome"],
        "error_category": row["error_category"],
        "error_message": row["error_message"],
        "error_transient": row["error_transient"],
        "run_id": context.run.run_id,
        "updated_at": companies_state.now(),
    }


def _wanted(
    plan: CompanyPlan, contact_ids: dict[str, str | None], company_ids: dict[str, str | None], placeholders: bool
) -> tuple[dict[str, Wanted | None], int]:
    """Each contact's wanted association (None: no company), and how many wait for an id.

    A dry run stands placeholders in for the ids HubSpot has not given yet.
    """
    wanted: dict[str, Wanted | None] = {}
    waiting = 0
    for email, contact_id in contact_ids.items():
        key = plan.members.get(email)
        if key is None:
            wanted[email] = None
            continue
        company_id = company_ids.get(key)
        if placeholders:
            contact_id = contact_id or companies_outbox.contact_placeholder(email)
            company_id = company_id or companies_outbox.company_placeholder(key)
        if contact_id and company_id:
            wanted[email] = Wanted(email, key, contact_id, company_id)
        else:
            waiting += 1
    return wanted, waiting


def _record_associations(engine: sa.Engine, rows: list[dict], wanted: dict, context: dg.AssetExecutionContext) -> None:
    gone = [row["email"] for row in rows if row["outcome"] == "archived" and wanted.get(row["email"]) is None]
    kept = [
        {
            "email": row["email"],
            "contact_id": row["contact_id"],
            "company_id": row["company_id"],
            "company_key": row["company_key"],
            "status": row["outcome"],
            "attempted": row["attempted"],
            "error_category": row["error_category"],
            "error_message": row["error_message"],
            "error_transient": row["error_transient"],
            "run_id": context.run.run_id,
            "updated_at": companies_state.now(),
        }
        for row in rows
        if row["email"] not in gone
    ]
    companies_state.delete_contact_companies(engine, gone)
    companies_state.upsert_rows(engine, companies_state.contact_company_table(), kept)


@dg.asset(
    deps=[hubspot_contacts, hubspot_companies],
    group_name="contacts",
    kinds={"hubspot"},
    pool=POOL,
    retry_policy=step_retry_policy(),
    description="Each contact associated in HubSpot with its company (HUBSPOT_COMPANIES=true); a contact that "
    "moved loses the association this sync gave it. Outcomes in `hubspot_contact_company`.",
)
def hubspot_contact_companies(
    context: dg.AssetExecutionContext, database: DatabaseResource, hubspot: HubSpotResource
) -> dg.MaterializeResult:
    log = context.log
    with failing_fast("hubspot_contact_companies"):
        if not companies_enabled():
            log.info("HubSpot: %s", OFF)
            return _off()
        mode = hubspot.mode()
        engine = database.engine
        companies_state.ensure_tables(engine)
        with database.exclusive(COMPANIES_LOCK):
            plan, contact_ids, _key = _plan(engine)
            company_ids = {key: row["hubspot_id"] for key, row in companies_state.company_states(engine).items()}
            wanted, waiting = _wanted(plan, contact_ids, company_ids, placeholders=not mode.live)
            work = due_associations(wanted, companies_state.contact_company_states(engine))
            report = Report(unchanged=work.unchanged)
            api = None
            outbox = None
            if not mode.live:
                outbox = _outbox(context, "associations", companies_outbox.association_requests(work))
            elif work.to_archive or work.to_create:
                api, crm = _open(hubspot, log)
                try:
                    sync_associations(
                        crm, work, wanted, lambda rows: _record_associations(engine, rows, wanted, context), report
                    )
                except HubSpotApiError as exc:
                    raise _refused(exc, "contact-company associations") from None
            else:
                log.info("HubSpot: every contact's company association is in step; no requests sent")
    if waiting:
        log.info("HubSpot: %d contacts wait for their own or their company's HubSpot id", waiting)
    associated, archived = report.outcomes["associated"], report.outcomes["archived"]
    if outbox:
        summary = (
            f"Dry run: {len(work.to_create)} associations to create and {len(work.to_archive)} to remove, in "
            f"{outbox[1]} requests written to the outbox; nothing was sent."
        )
    else:
        summary = (
            f"{associated} contacts associated with their company, {archived} old associations removed, "
            f"{work.unchanged} unchanged, {waiting} waiting for an id, {report.outcomes['failed']} failed, "
            f"in {api.calls if api else 0} API calls"
        )
    metadata = {
        "summary": summary,
        **_counts(
            report,
            api,
            mode,
            contacts_with_company=len(plan.members),
            associated=associated,
            archived=archived,
            waiting=waiting,
        ),
        "preview": _preview(
            report.preview, ["email", "company_key", "contact_id", "company_id", "outcome", "error_category"]
        ),
    }
    if outbox:
        metadata.update(
            outbox=dg.MetadataValue.path(outbox[0]),
            would_associate=dg.MetadataValue.int(len(work.to_create)),
            would_archive=dg.MetadataValue.int(len(work.to_archive)),
            would_send_batches=dg.MetadataValue.int(outbox[1]),
        )
    return dg.MaterializeResult(metadata=metadata)
