"""The `hubspot_contacts` asset against the local HubSpot server: throughput, requests, 429s, losses.

The asset itself is materialized in-process (the real asset function, resources and state
recording), with its resources pointed at the benchmark database and at a `HubSpotServer`. Its step
time comes from Dagster's own STEP_START/STEP_SUCCESS events, so run setup is not counted. Then the
same materialization again, nothing changed: it must send nothing.

The server runs in a process of its own by default (`server_mode="process"`): in a thread it would
share the GIL with the client, and its own work (~17 ms a 100-contact batch here, a third of the
client's) would be charged to the sync. `server_mode="thread"` keeps it in this process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HUBSPOT_KEYS = (
    "contacts",
    "rate_limit",
    "interval_ms",
    "latency_s",
    "max_in_flight",
    "ceiling_contacts_per_s",
    "server_mode",
    "setup_requests",
    "load_seconds",
    "waited_for_window_seconds",
    "seconds",
    "contacts_per_s",
    "fraction_of_ceiling",
    "fastest_legal_seconds",
    "fastest_legal_all_requests_seconds",
    "ratio_to_fastest_legal",
    "sync_window_seconds",
    "sync_window_contacts_per_s",
    "requests_sent",
    "upsert_requests",
    "other_requests",
    "connections_opened",
    "status_429",
    "client_429",
    "client_api_calls",
    "max_requests_in_window",
    "expected",
    "stored",
    "lost",
    "duplicated",
    "unexpected",
    "created",
    "updated",
    "failed",
    "pending",
    "state_synced",
    "state_id_mismatch",
    "rerun",
    "update",
)
RERUN_KEYS = ("requests_sent", "status_429", "seconds", "due", "client_api_calls")
UPDATE_KEYS = ("changed", "requests_sent", "upsert_requests", "expected_batches", "exact_batches", "updated", "seconds")


class _ThreadServer:
    """A `HubSpotServer` in a thread of this process, behind the interface both modes share."""

    def __init__(self, **kwargs: Any):
        from etl_assets_tests.servers.hubspot_server import HubSpotServer

        self._server = HubSpotServer(**kwargs)

    def __enter__(self) -> _ThreadServer:
        self._server.start()
        self.url, self.token = self._server.url, self._server.token
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    def call(self, command: str, *args: Any) -> Any:
        return _answer(self._server, command, args)


def _answer(server, command: str, args: tuple) -> Any:
    if command == "records":  # (arrival time, path, status, inputs) per request, in arrival order
        return [(r.time, r.path, r.status, r.n_inputs) for r in list(server.request_log)]
    if command == "contacts":  # (key, id, email property) per stored contact
        return [
            (key, record["id"], str(record["properties"].get("email", "")).lower())
            for key, record in server.contacts_snapshot().items()
        ]
    if command == "reset_log":
        return server.reset_log()
    if command == "connections":  # TCP connections accepted since the server started
        return server.connections_opened
    raise ValueError(f"unknown command {command!r}")


def serve_over_stdio(kwargs: dict) -> None:
    """The server process: start the server, print its address, answer JSON-line commands on stdin.

    Imports nothing but the server module (stdlib and email_validator), so it starts in well under
    a second even on a loaded machine.
    """
    from etl_assets_tests.servers.hubspot_server import HubSpotServer

    with HubSpotServer(**kwargs) as server:
        print(json.dumps({"url": server.url, "token": server.token}), flush=True)
        for line in sys.stdin:
            command, args = json.loads(line)
            if command == "stop":
                return
            try:
                reply = {"ok": _answer(server, command, tuple(args))}
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                reply = {"error": repr(exc)}
            print(json.dumps(reply), flush=True)


class _ProcessServer:
    """A `HubSpotServer` in a child process (`python benchmarks/hubspot_phase.py KWARGS`), over stdio."""

    def __init__(self, **kwargs: Any):
        self._kwargs = kwargs

    def __enter__(self) -> _ProcessServer:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), json.dumps(self._kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        first = self._process.stdout.readline()  # type: ignore[union-attr]
        if not first:
            self._process.wait(timeout=10)
            raise RuntimeError(f"the HubSpot server process exited with {self._process.returncode} before starting")
        address = json.loads(first)
        self.url, self.token = address["url"], address["token"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._process.stdin.write(json.dumps(["stop", []]) + "\n")  # type: ignore[union-attr]
            self._process.stdin.close()  # type: ignore[union-attr]
            self._process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait(timeout=5)

    def call(self, command: str, *args: Any) -> Any:
        self._process.stdin.write(json.dumps([command, list(args)]) + "\n")  # type: ignore[union-attr]
        self._process.stdin.flush()  # type: ignore[union-attr]
        line = self._process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the HubSpot server process died (exit {self._process.poll()}) during {command}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"HubSpot server process: {command} failed: {reply['error']}")
        return reply["ok"]


def empty_result() -> dict[str, Any]:
    result: dict[str, Any] = {key: None for key in HUBSPOT_KEYS}
    result["rerun"] = {key: None for key in RERUN_KEYS}
    result["update"] = {key: None for key in UPDATE_KEYS}
    return result


def _materialize(job, instance, asset_key, log_level: str):
    import dagster as dg

    result = job.execute_in_process(
        instance=instance,
        asset_selection=[asset_key],
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    if not result.success:
        failures = [
            event.event_specific_data.error.message
            for event in result.all_events
            if event.event_type == dg.DagsterEventType.STEP_FAILURE
        ]
        raise RuntimeError(f"hubspot_contacts failed: {' | '.join(failures) or 'see the log above'}")
    [event] = result.asset_materializations_for_node("hubspot_contacts")
    metadata = {key: value.value for key, value in event.metadata.items()}
    return result, metadata


def _step_seconds(instance, run_id: str) -> float | None:
    import dagster as dg

    records = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS})
    starts = [r.timestamp for r in records if r.dagster_event.event_type == dg.DagsterEventType.STEP_START]
    ends = [r.timestamp for r in records if r.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def run_hubspot(
    database_url: str,
    csv_path: Path,
    contacts: int,
    rate_limit: int,
    interval_ms: int,
    latency_s: float,
    max_in_flight: int | None,
    log: logging.Logger,
    log_level: str = "INFO",
    generate=None,
    server_mode: str = "process",
) -> dict[str, Any]:
    """List the account's properties, load `contacts` new contacts into `contacts`, sync them, sync
    again; the figures as a dict."""
    import dagster as dg
    import sqlalchemy as sa

    from benchmarks.load_step import execute_step
    from etl_assets import settings
    from etl_assets.assets.hubspot import current_properties, hubspot_contacts
    from etl_assets.contacts import schema
    from etl_assets.contacts.mapping import load_column_map
    from etl_assets.hubspot import property_cache, state
    from etl_assets.resources.database import DatabaseResource
    from etl_assets.resources.hubspot import HubSpotResource
    from etl_assets.resources.secrets import SecretsResource
    from etl_assets_tests.servers.hubspot_server import max_in_window

    out = empty_result()
    out.update(
        contacts=contacts, rate_limit=rate_limit, interval_ms=interval_ms, latency_s=latency_s, server_mode=server_mode
    )
    out["ceiling_contacts_per_s"] = rate_limit * 100 / (interval_ms / 1000)

    server_class = {"process": _ProcessServer, "thread": _ThreadServer}[server_mode]
    with server_class(rate_limit=rate_limit, interval_ms=interval_ms, latency=latency_s) as server:
        # Endpoints and credentials come only from the environment, as in a deployment.
        os.environ.update(
            ETL_SECRETS_BACKEND="env",
            ETL_DATABASE_URL=database_url,
            HUBSPOT_ACCESS_TOKEN=server.token,
            HUBSPOT_API_BASE=server.url,
        )
        secrets = SecretsResource()
        database = DatabaseResource(secrets=secrets)
        engine = database.engine
        hubspot = HubSpotResource(
            rate_limit=rate_limit,
            rate_interval_ms=interval_ms,
            max_in_flight=max_in_flight,
            create_missing_properties=True,
            secrets=secrets,
        )
        out["max_in_flight"] = hubspot.in_flight()

        # 1. The account as a daily run finds it: the custom properties exist (an earlier sync
        # created them) and this run's preflight listed them (stored in hubspot_property_definitions).
        property_cache.ensure_table(engine)
        column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
        current_properties(hubspot.open_api(log), engine, column_map, True, property_cache.max_age_seconds(), log)
        listed = time.monotonic()
        out["setup_requests"] = len(server.call("records"))

        # 2. M new contacts in `contacts`, by the contacts_table step's own work.
        if generate is not None:
            generate(csv_path, contacts)
        load = execute_step(csv_path, database_url, "benchmark-hubspot-load", None, log)
        out["load_seconds"] = round(load["seconds"], 3)
        with engine.connect() as conn:
            expected = {row[0] for row in conn.execute(sa.text(f"SELECT email FROM {schema.CONTACTS}"))}
        out["expected"] = len(expected)
        log.info(
            "hubspot: %d contacts loaded into `contacts` (%d rejected) in %.1fs",
            len(expected),
            load["report"]["rejected"],
            out["load_seconds"],
        )
        # In daily_etl the Kaggle download and the load stand between the preflight's listing and the
        # sync; here the sync starts once the listing has left the rate window, so the step's figure
        # is the step's own. How long that took is reported.
        out["waited_for_window_seconds"] = round(
            max(0.0, listed + interval_ms / 1000 + latency_s - time.monotonic()), 3
        )
        time.sleep(out["waited_for_window_seconds"])
        defs = dg.Definitions(
            assets=[hubspot_contacts], resources={"database": database, "hubspot": hubspot, "secrets": secrets}
        )
        job = defs.resolve_implicit_global_asset_job_def()
        instance = dg.DagsterInstance.ephemeral()
        key = dg.AssetKey("hubspot_contacts")

        def materialized() -> tuple[float, dict, list]:
            """The asset once more: its step's seconds, its metadata, the requests the server logged."""
            server.call("reset_log")
            wall = time.perf_counter()
            result, metadata = _materialize(job, instance, key, log_level)
            wall = time.perf_counter() - wall
            return _step_seconds(instance, result.run_id) or wall, metadata, server.call("records")

        # 3. The first sync: every contact is new.
        log.info(
            "hubspot: syncing %d contacts at %d requests per %.1fs (ceiling %.0f contacts/s, server in a %s)",
            len(expected),
            rate_limit,
            interval_ms / 1000,
            out["ceiling_contacts_per_s"],
            server_mode,
        )
        connections_before = server.call("connections")
        seconds, metadata, records = materialized()  # records: (time, path, status, inputs)
        # The client keeps its connections: about one per request in flight, not one per request.
        out["connections_opened"] = server.call("connections") - connections_before
        upserts = [r for r in records if r[1].endswith("/batch/upsert")]
        out["seconds"] = round(seconds, 3)
        out["contacts_per_s"] = round(len(expected) / seconds, 1) if seconds else None
        out["fraction_of_ceiling"] = (
            round(out["contacts_per_s"] / out["ceiling_contacts_per_s"], 3)
            if out["contacts_per_s"] is not None
            else None
        )
        if upserts:
            # First upsert's arrival to the last one's answer (its arrival plus the server's latency).
            out["sync_window_seconds"] = round(upserts[-1][0] - upserts[0][0] + latency_s, 3)
            out["sync_window_contacts_per_s"] = round(sum(r[3] for r in upserts) / out["sync_window_seconds"], 1)
        out["requests_sent"] = len(records)
        out["upsert_requests"] = len(upserts)
        # The fastest a limit-abiding client can be: the first R requests at once, then R a window,
        # the last answered one latency later. For the upserts alone (the 90 s at 100k and
        # 100 / 10 s) and for every request the step made (property calls take places too).
        window_s = interval_ms / 1000
        out["fastest_legal_seconds"] = round((-(-(len(expected) // 100) // rate_limit) - 1) * window_s + latency_s, 3)
        out["fastest_legal_all_requests_seconds"] = round(
            (-(-len(records) // rate_limit) - 1) * window_s + latency_s, 3
        )
        out["ratio_to_fastest_legal"] = round(seconds / out["fastest_legal_seconds"], 3) if seconds else None
        out["other_requests"] = len(records) - len(upserts)
        out["status_429"] = sum(1 for r in records if r[2] == 429)
        out["max_requests_in_window"] = max_in_window(sorted(r[0] for r in records), interval_ms / 1000)
        out["client_429"] = metadata.get("rate_limited_429")
        out["client_api_calls"] = metadata.get("api_calls")
        for name in ("created", "updated", "failed", "pending"):
            out[name] = metadata.get(name)

        # 4. What HubSpot holds against what it should: nothing lost, nothing twice.
        stored = server.call("contacts")  # (key, id, email property)
        server_emails = [email for _key, _id, email in stored]
        server_ids = [contact_id for _key, contact_id, _email in stored]
        id_by_email = {key: contact_id for key, contact_id, _email in stored}
        out["stored"] = len(expected & set(server_emails))
        out["lost"] = len(expected) - out["stored"]
        # Two records for one email, or one id for two emails: either is a duplicate.
        out["duplicated"] = (len(server_emails) - len(set(server_emails))) + (len(server_ids) - len(set(server_ids)))
        out["unexpected"] = len(set(server_emails) - expected)
        with engine.connect() as conn:
            state = conn.execute(
                sa.text(f"SELECT email, hubspot_id FROM {state.SYNC_STATE} WHERE status = 'synced'")
            ).all()
        out["state_synced"] = len(state)
        out["state_id_mismatch"] = sum(1 for email, hubspot_id in state if id_by_email.get(email) != hubspot_id)

        # 5. Again, nothing changed: no request at all.
        seconds, metadata, records = materialized()
        out["rerun"] = {
            "requests_sent": len(records),
            "status_429": sum(1 for r in records if r[2] == 429),
            "seconds": round(seconds, 3),
            "due": metadata.get("due"),
            "client_api_calls": metadata.get("api_calls"),
        }

        # 6. One contact in ten changed (a new content hash, as a load that changed them leaves it):
        # exactly one batch request per 100 of them.
        with engine.begin() as conn:
            changed = conn.execute(
                sa.text(
                    f"UPDATE {schema.CONTACTS} SET content_hash = MD5(CONCAT(content_hash, 'changed')) WHERE id % 10 = 0"
                )
            ).rowcount
        seconds, metadata, records = materialized()
        out["update"] = {
            "changed": changed,
            "requests_sent": len(records),
            "upsert_requests": sum(1 for r in records if r[1].endswith("/batch/upsert")),
            "expected_batches": -(-changed // 100),
            "exact_batches": sum(1 for r in records if r[1].endswith("/batch/upsert")) == -(-changed // 100),
            "updated": metadata.get("updated"),
            "seconds": round(seconds, 3),
        }
    engine.dispose()
    return out


if __name__ == "__main__":  # the server process: only the repository on the path, only the server imported
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    serve_over_stdio(json.loads(sys.argv[1]))
