#!/usr/bin/env python3
"""Fault scenarios of the compose stack test, run by scripts/stack_test.sh on its running stack.

Each scenario injects one fault an operator meets and asserts the final state from outside the
pipeline: MySQL rows (through `docker-compose exec mysql`), the HubSpot fake's counters (its admin
port), run statuses (the webserver's GraphQL API) and the containers left behind (docker CLI).

    stack_faults.py proxy          only docker_proxy holds the engine's socket; it refuses what
                                   the launcher and the janitor do not need (403)
    stack_faults.py cancel         terminate daily_etl halfway through the HubSpot sync
    stack_faults.py crash          `docker kill` the run container during the contacts load
    stack_faults.py queue          restart the daemon with three runs in its queue
    stack_faults.py mysql-restart  restart MySQL under a contacts load
    stack_faults.py upgrade        the docker/README.md "Upgrading" path to a new user-code tag

Standard library only (the host's python3). The environment is stack_test.sh's: the compose
project, the secrets directory, ETL_STACK_WEB_PORT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "etl_assets"
JOB = "daily_etl"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
# Run monitoring polls every 30 s (deploy/dagster.yaml); a verdict may take two polls plus a resume.
MONITOR_TIMEOUT = 240.0
RUN_TIMEOUT = float(os.environ.get("ETL_STACK_RUN_TIMEOUT", "900"))
# The blocking session of the MySQL scenarios, recognisable in the process list.
HOLD_SQL = "SELECT SLEEP(1200)"
# A content digest of `contacts`: equal digests, equal tables (email + content hash per row).
DIGEST_SQL = "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', email, content_hash))), 0) FROM contacts"


class ScenarioFailed(Exception):
    """An expectation of a scenario did not hold."""


def log(message: str) -> None:
    print(f"[stack_faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


def expect(condition: bool, what: str, found: object) -> None:
    if not condition:
        raise ScenarioFailed(f"expected {what}; found {found}")


def wait_for(what: str, probe: Callable[[], object], timeout: float, interval: float = 2.0) -> object:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise ScenarioFailed(f"expected {what} within {timeout:.0f}s; last seen: {last!r}")


# --- the stack: compose, docker, MySQL, the HubSpot fake ------------------------------------


def compose_cmd(*args: str) -> list[str]:
    return [
        "docker-compose",
        "--env-file",
        str(ROOT / ".env.example"),
        "-f",
        str(ROOT / "docker-compose.yml"),
        "-f",
        str(ROOT / "docker-compose.test.yml"),
        *args,
    ]


def sh(cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
    if check and result.returncode != 0:
        raise ScenarioFailed(f"`{' '.join(cmd[:8])} ...` exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def compose(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    return sh(compose_cmd(*args), timeout=timeout, env=env)


MYSQL_CLIENT = 'mysql -h 127.0.0.1 -u"$MYSQL_USER" -p"$(cat /run/secrets/ETL_DATABASE_PASSWORD)" -N -B'


def mysql(sql: str) -> list[list[str]]:
    """Rows of `sql`, run as the application user in the stack's MySQL."""
    out = compose("exec", "-T", "mysql", "sh", "-c", f'{MYSQL_CLIENT} -e "$1" "$MYSQL_DATABASE"', "sh", sql)
    return [line.split("\t") for line in out.replace("\r", "").splitlines() if line]


def table_digest() -> tuple[int, int]:
    count, digest = mysql(DIGEST_SQL)[0]
    return int(count), int(digest)


def synced_emails() -> set[str]:
    return {row[0] for row in mysql("SELECT email FROM hubspot_sync_state WHERE status = 'synced'")}


def lock_waiters() -> list[list[str]]:
    """Sessions waiting for a table lock: a load blocked by our hold (ids, states)."""
    return mysql("SELECT ID, STATE FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for table%lock%'")


def hold_ids() -> list[str]:
    return [row[0] for row in mysql(f"SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = '{HOLD_SQL}'")]


@contextmanager
def contacts_locked() -> Iterator[None]:
    """Hold a read lock on `contacts` from a session of our own: a load then stages its rows and
    waits, for as long as we like, on the metadata lock its write to `contacts` needs."""
    holder = subprocess.Popen(
        compose_cmd(
            "exec",
            "-T",
            "mysql",
            "sh",
            "-c",
            f'{MYSQL_CLIENT} -e "LOCK TABLES contacts READ; {HOLD_SQL};" "$MYSQL_DATABASE"',
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("the lock-holding session in MySQL", hold_ids, 60, 1)
        yield
    finally:
        for session in _quiet(hold_ids) or []:
            _quiet(lambda session=session: mysql(f"KILL {session}"))
        holder.terminate()
        try:
            holder.wait(20)
        except subprocess.TimeoutExpired:
            holder.kill()


def _quiet(call: Callable[[], object]) -> object:
    """Best effort (cleanup after MySQL went away)."""
    try:
        return call()
    except (ScenarioFailed, subprocess.TimeoutExpired):
        return None


def fake_admin(path: str, body: dict | None = None) -> dict:
    """The HubSpot fake's admin port, from inside its container (not published)."""
    script = (
        "import sys, urllib.request\n"
        "data = sys.argv[2].encode() if len(sys.argv) > 2 else None\n"
        "req = urllib.request.Request('http://127.0.0.1:8081' + sys.argv[1], data, "
        "{'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
    )
    args = ["exec", "-T", "hubspot", "python", "-c", script, path]
    if body is not None:
        args.append(json.dumps(body))
    return json.loads(compose(*args))


def set_latency(seconds: float) -> None:
    expect(fake_admin("/latency", {"seconds": seconds})["latency"] == seconds, f"fake latency {seconds}", "other")


def total_writes(writes: dict[str, dict[str, int]]) -> dict[str, int]:
    return {email: counts["created"] + counts["updated"] for email, counts in writes.items()}


@dataclass(frozen=True)
class Container:
    id: str
    state: str
    image: str
    exit_code: int


def run_containers(run_id: str) -> list[Container]:
    """The containers DockerRunLauncher made for a run (a resumed run has several), oldest first."""
    ids = sh(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=dagster/run_id={run_id}"]).split()
    if not ids:
        return []
    out = sh(
        ["docker", "inspect", "-f", "{{.Created}} {{.Id}} {{.State.Status}} {{.Config.Image}} {{.State.ExitCode}}"]
        + ids
    )
    rows = sorted(line.split() for line in out.splitlines() if line.strip())
    return [Container(row[1], row[2], row[3], int(row[4])) for row in rows]


# --- GraphQL -----------------------------------------------------------------------------


class Dagster:
    def __init__(self, url: str) -> None:
        self.url = url

    def gql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            doc = json.load(resp)
        if doc.get("errors"):
            raise ScenarioFailed(f"GraphQL errors: {doc['errors']}")
        return doc["data"]

    def location_loaded(self) -> bool:
        data = self.gql(
            """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                locationOrLoadError { __typename } } } } }"""
        )
        entries = data["workspaceOrError"].get("locationEntries", [])
        return any(
            e["name"] == LOCATION
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    def launch(self, scenario: str, assets: list[str] | None = None) -> str:
        selector: dict = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": JOB}
        if assets:
            selector["assetSelection"] = [{"path": [name]} for name in assets]
        data = self.gql(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
                ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message }
                ... on InvalidSubsetError { message }
                ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "p": {
                    "selector": selector,
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": "etl_assets/stack_test", "value": scenario}]},
                }
            },
        )["launchRun"]
        expect(data["__typename"] == "LaunchRunSuccess", "launchRun to succeed", data)
        run_id = data["run"]["runId"]
        log(f"launched run {run_id} ({', '.join(assets) if assets else JOB})")
        return run_id

    def run(self, run_id: str) -> dict:
        return self.gql(
            """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
                runId status startTime endTime tags { key value } } } }""",
            {"id": run_id},
        )["runOrError"]

    def status(self, run_id: str) -> str:
        return self.run(run_id)["status"]

    def wait_terminal(self, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        status = wait_for(
            f"run {run_id} to finish",
            lambda: (s := self.status(run_id)) in TERMINAL and s,
            timeout,
        )
        log(f"run {run_id} ended {status}")
        return str(status)

    def events(self, run_id: str) -> list[dict]:
        return self.gql(
            """query($id: ID!) { logsForRun(runId: $id, limit: 3000) { ... on EventConnection {
                events { __typename ... on MessageEvent { message level } } } } }""",
            {"id": run_id},
        )["logsForRun"].get("events", [])

    def errors(self, run_id: str) -> list[str]:
        return [e.get("message", "")[:600] for e in self.events(run_id) if e.get("level") in ("ERROR", "CRITICAL")]

    def expect_success(self, run_id: str, timeout: float = RUN_TIMEOUT) -> None:
        status = self.wait_terminal(run_id, timeout)
        expect(status == "SUCCESS", f"run {run_id} SUCCESS", f"{status}: {self.errors(run_id)[-5:]}")

    def terminate(self, run_id: str) -> None:
        data = self.gql(
            """mutation($id: String!) { terminateRun(runId: $id) { __typename
                ... on TerminateRunFailure { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )["terminateRun"]
        expect(data["__typename"] == "TerminateRunSuccess", f"terminateRun({run_id}) to succeed", data)


# --- scenarios -------------------------------------------------------------------------------


def scenario_proxy(dagster: Dagster) -> None:
    """Only docker_proxy mounts the engine's socket; through it, only the launcher's calls pass."""
    socket = os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")
    ids = sh(["docker", "ps", "-aq", "--no-trunc"]).split()
    expect(bool(ids), "containers in the stack", "none")
    template = (
        '{{.Name}}|{{index .Config.Labels "com.docker.compose.service"}}|'
        "{{range .Mounts}}{{.Source}}>{{.Destination}},{{end}}|{{.HostConfig.GroupAdd}}"
    )
    holders, groups = [], []
    for line in sh(["docker", "inspect", "-f", template, *ids]).splitlines():
        name, service, mounts, group_add = line.split("|")
        if any(m.endswith(".sock") or m.split(">")[0] == socket for m in mounts.split(",") if m):
            holders.append(service or name)
        if group_add not in ("[]", "<no value>", ""):
            groups.append(service or name)
    expect(holders == ["docker_proxy"], "the socket mounted by docker_proxy only", holders)
    expect(groups == ["docker_proxy"], "a supplementary group (the socket's) on docker_proxy only", groups)
    log(f"socket mounted only by docker_proxy, among {len(ids)} containers")

    user_code = sh(["docker", "inspect", "-f", "{{.Id}}", "etl_assets_user_code"]).strip()
    probe = (
        "import json, sys, urllib.request, urllib.error\n"
        "out = {}\n"
        "for method, path, body in json.loads(sys.argv[1]):\n"
        "    req = urllib.request.Request('http://docker_proxy:2375' + path, "
        "body and json.dumps(body).encode(), {'Content-Type': 'application/json'}, method=method)\n"
        "    try:\n"
        "        out[method + ' ' + path] = urllib.request.urlopen(req, timeout=10).status\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        out[method + ' ' + path] = exc.code\n"
        "    except OSError as exc:\n"
        "        out[method + ' ' + path] = type(exc).__name__\n"
        "print(json.dumps(out))\n"
    )
    missing = "/containers/etl-stack-test-no-such-container"
    calls = [
        ("GET", "/_ping", None, 200),
        ("GET", "/v1.41/version", None, 200),
        ("GET", f"/v1.41/containers/{user_code}/json", None, 200),
        ("GET", "/v1.41/containers/json?all=1", None, 200),
        # Allowed calls reach the engine, which answers for a container that does not exist.
        ("POST", f"/v1.41{missing}/start", None, 404),
        ("POST", f"/v1.41{missing}/stop?t=1", None, 404),
        ("DELETE", f"/v1.41{missing}?v=False&link=False&force=False", None, 404),
        ("POST", "/v1.41/containers/create", {"Image": "etl-stack-test-no-such-image:0"}, 404),
        ("GET", "/images/json", None, 403),
        ("GET", "/v1.41/images/json", None, 403),
        ("GET", "/volumes", None, 403),
        ("POST", f"/v1.41/containers/{user_code}/exec", {"Cmd": ["id"]}, 403),
        ("POST", f"/containers/{user_code}/kill", None, 403),
        ("DELETE", f"/containers/{user_code}?force=1", None, 403),
        ("POST", "/containers/create", {"Image": "x", "HostConfig": {"Privileged": True}}, 403),
        ("POST", "/containers/create", {"Image": "x", "HostConfig": {"binds": ["/:/host"]}}, 403),
    ]
    payload = json.dumps([[m, p, b] for m, p, b, _ in calls])
    got = json.loads(compose("exec", "-T", "daemon", "python", "-c", probe, payload))
    wrong = {f"{m} {p}": (want, got.get(f"{m} {p}")) for m, p, _, want in calls if got.get(f"{m} {p}") != want}
    expect(not wrong, "these answers from the proxy (expected, found)", wrong)
    log(
        f"through the proxy: {sum(1 for c in calls if c[3] == 403)} forbidden calls answered 403; "
        f"{sum(1 for c in calls if c[3] != 403)} allowed ones reached the engine"
    )

    # user_code (and the run containers, on the same network) cannot even reach the proxy.
    reach = json.loads(compose("exec", "-T", "user_code", "python", "-c", probe, json.dumps([["GET", "/_ping", None]])))
    expect(reach["GET /_ping"] not in (200, 403), "user_code unable to reach docker_proxy", reach)
    log(f"user_code cannot reach the proxy ({reach['GET /_ping']})")


def scenario_cancel(dagster: Dagster) -> None:
    """Terminate daily_etl while hubspot_contacts is sending: CANCELED, the container stopped,
    every contact HubSpot accepted recorded as synced, and the next run sends only the rest.

    The step's DagsterExecutionInterruptedError reaches sync_contacts while batches are in flight
    (etl_assets/hubspot/sync.py): it lets them finish and records them before it re-raises.
    """
    contacts = int(mysql("SELECT COUNT(*) FROM contacts")[0][0])
    created_before = fake_admin("/state")["created"]
    writes_before = total_writes(fake_admin("/writes"))
    # Forget what was synced: every contact is due again (the fake already holds them, so each
    # one is an update there; a second creation of any would show in `created`).
    mysql("DELETE FROM hubspot_sync_state")
    set_latency(3.0)
    try:
        run_id = dagster.launch("cancel")

        def partly_sent() -> bool:
            done = total_writes(fake_admin("/writes"))
            sent = sum(1 for email, n in done.items() if n > writes_before.get(email, 0))
            return 0 < sent < contacts and sent

        # The run reaches the sync after five step subprocesses have started, 30-50 s each on a
        # loaded 2-vCPU machine (2026-12-02: 262 s from launch to hubspot_contacts' worker).
        sent = wait_for("the fake to have accepted part of the sync", partly_sent, 600, 0.5)
        log(f"{sent} of {contacts} contacts accepted; terminating run {run_id}")
        dagster.terminate(run_id)
        status = dagster.wait_terminal(run_id, 240)
        expect(status == "CANCELED", f"run {run_id} CANCELED", status)
    finally:
        set_latency(0.0)
    # DockerRunLauncher.terminate stops the container (`docker stop`); it never removes it (the
    # run_janitor does, after the retention time): "gone" here means exited, not running.
    containers = wait_for(
        "the run container to have stopped",
        lambda: (cs := run_containers(run_id)) and all(c.state == "exited" for c in cs) and cs,
        120,
    )
    log(f"run container(s) {[c.id[:12] for c in containers]} exited (codes {[c.exit_code for c in containers]})")
    # Requests the fake was still sleeping on when the run stopped are applied when they wake.
    time.sleep(4)
    writes = total_writes(fake_admin("/writes"))
    accepted = {email for email, n in writes.items() if n > writes_before.get(email, 0)}
    synced = synced_emails()
    expect(
        accepted == synced,
        "the contacts HubSpot accepted == those recorded synced",
        f"{len(accepted)} accepted, {len(synced)} synced; accepted only: {sorted(accepted - synced)[:5]}, "
        f"synced only: {sorted(synced - accepted)[:5]}",
    )
    log(f"cancelled run: {len(accepted)} contacts accepted, the same {len(synced)} recorded synced")

    dagster.expect_success(dagster.launch("cancel-rerun"))
    writes = total_writes(fake_admin("/writes"))
    resent = sorted(email for email, n in writes.items() if n - writes_before.get(email, 0) > 1)
    missed = sorted(email for email, n in writes.items() if n == writes_before.get(email, 0))
    expect(not resent and not missed, "every contact sent exactly once over the two runs", f"{resent=}, {missed=}")
    state = fake_admin("/state")
    expect(state["created"] == created_before == state["contacts"], "no contact created twice", state)
    expect(len(synced_emails()) == contacts, f"all {contacts} contacts synced", len(synced_emails()))
    log(f"next run sent the other {contacts - len(accepted)}; none twice, none created again")


def force_a_load() -> tuple[tuple[int, int], tuple[int, int]]:
    """Make the next contacts_table load a real one, returning (digest of the full table, digest
    after the change). The loader skips a load whose source file and column map equal the last
    load's while `contacts` still has that load's row count (etl_assets/contacts/loader.py,
    _previous_load_matches); deleting one contact breaks the count, so the next load stages the
    file and writes the contact back: a write to `contacts` that the lock makes wait."""
    full = table_digest()
    mysql("DELETE FROM contacts ORDER BY email LIMIT 1")
    changed = table_digest()
    expect(changed[0] == full[0] - 1, "one contact fewer", changed)
    return full, changed


def wait_blocked(run_id: str, orphans: frozenset[str] = frozenset(), timeout: float = 240) -> Container:
    """The run's newest container is running and its load waits on our lock. `orphans`: waiting
    sessions of containers already killed (MySQL may not have noticed they are gone)."""

    def blocked() -> Container | None:
        containers = run_containers(run_id)
        waiting = {row[0] for row in lock_waiters()} - orphans
        if containers and containers[-1].state == "running" and waiting:
            return containers[-1]
        return None

    return wait_for(f"run {run_id}'s load waiting on the lock", blocked, timeout, 1)  # type: ignore[return-value]


def scenario_crash(dagster: Dagster) -> None:
    """`docker kill` the run container while the load waits: run monitoring resumes the run once
    (max_resume_run_attempts: 1), that container is killed too, and the run ends FAILURE;
    `contacts` is the previous load; the next run converges to the exact table."""
    full, before = force_a_load()
    with contacts_locked():
        run_id = dagster.launch("crash", assets=["contacts_table"])
        killed: list[str] = []
        orphans: set[str] = set()
        deadline = time.monotonic() + MONITOR_TIMEOUT * 2
        while (status := dagster.status(run_id)) not in TERMINAL:
            expect(time.monotonic() < deadline, f"run {run_id} to end after its container was killed", status)
            containers = run_containers(run_id)
            if containers and containers[-1].state == "running" and containers[-1].id not in killed:
                victim = wait_blocked(run_id, frozenset(orphans))
                orphans |= {row[0] for row in lock_waiters()}
                sh(["docker", "kill", victim.id])
                killed.append(victim.id)
                log(f"killed run container {victim.id[:12]} (#{len(killed)}) while its load waited on the lock")
            time.sleep(2)
        expect(status == "FAILURE", f"run {run_id} FAILURE", status)
        expect(len(killed) == 2, "the run resumed once, in a second container (both killed)", len(killed))
        expect(table_digest() == before, "contacts unchanged while the lock is held", table_digest())
    # The killed loads' sessions may still wait on the lock; released, they find their client
    # gone and roll back.
    wait_for("no session waiting on a lock", lambda: not lock_waiters(), 60)
    time.sleep(2)
    expect(table_digest() == before, "contacts as the previous load left it", f"{table_digest()} vs {before}")
    log(f"run {run_id} FAILURE after {len(killed)} kills; contacts unchanged ({before[0]} rows)")
    dagster.expect_success(dagster.launch("crash-rerun", assets=["contacts_table"]))
    expect(table_digest() == full, "the next run to restore the exact table", f"{table_digest()} vs {full}")
    log(f"next run converged: {full[0]} rows, digest {full[1]}")


def scenario_queue(dagster: Dagster) -> None:
    """Three daily_etl runs queued one at a time (tag etl_assets/hubspot_sync, limit 1); the
    daemon restarts while they wait: all three succeed, one after the other, none lost."""
    runs = [dagster.launch(f"queue-{n}") for n in range(3)]
    wait_for(
        "one run started, the other two still queued",
        lambda: (
            sorted(s := [dagster.status(r) for r in runs])
            in (
                ["QUEUED", "QUEUED", "STARTING"],
                ["QUEUED", "QUEUED", "STARTED"],
            )
            and s
        ),
        180,
        1,
    )
    log("restarting the daemon with runs in the queue")
    compose("restart", "-t", "20", "daemon", timeout=180)
    for run_id in runs:
        dagster.expect_success(run_id)
    spans = sorted((dagster.run(r)["startTime"], dagster.run(r)["endTime"], r) for r in runs)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        expect(end <= start, f"run {second} to start after {first} ended", f"start {start} < end {end}")
    for run_id in runs:
        # The run worker reports SUCCESS a moment before its container exits.
        containers = wait_for(
            f"run {run_id}'s container to exit",
            lambda run_id=run_id: (cs := run_containers(run_id)) and all(c.state == "exited" for c in cs) and cs,
            120,
        )
        expect(
            len(containers) == 1 and containers[0].exit_code == 0 and containers[0].state == "exited",
            f"run {run_id} in one container that exited 0",
            containers,
        )
    log("3 queued runs: all SUCCESS, one at a time, each in its own container")


def scenario_mysql_restart(dagster: Dagster) -> None:
    """Restart MySQL while a load waits to write: retries carry the run to SUCCESS, exact table."""
    full, _ = force_a_load()
    with contacts_locked():
        run_id = dagster.launch("mysql-restart", assets=["contacts_table"])
        wait_blocked(run_id)
        log("restarting mysql under the load")
        compose("restart", "-t", "20", "mysql", timeout=180)
    wait_for(
        "mysql healthy again",
        lambda: "healthy" in sh(["docker", "inspect", "-f", "{{.State.Health.Status}}", mysql_container()]),
        120,
    )
    dagster.expect_success(run_id)
    # The restart did hit the load: an in-step retry (etl_assets/retrying.py logs "failed (attempt
    # n/N") or a step retry (ETL_STEP_RETRIES, ExecutionStepUpForRetryEvent) carried it through.
    retried = [
        (e.get("message") or "-").splitlines()[0][:200]
        for e in dagster.events(run_id)
        if "failed (attempt" in e.get("message", "") or e["__typename"] == "ExecutionStepUpForRetryEvent"
    ]
    expect(bool(retried), f"run {run_id} to have retried after losing MySQL", "no retry in its event log")
    log(f"retried: {retried[0]}")
    expect(table_digest() == full, "the exact table after the restarted load", f"{table_digest()} vs {full}")
    log(f"run {run_id} SUCCESS through the restart; contacts exact ({full[0]} rows)")


def mysql_container() -> str:
    return compose("ps", "-q", "mysql").strip()


def scenario_upgrade(dagster: Dagster, new_image: str) -> None:
    """docker/README.md "Upgrading": stop the daemon, migrate Dagster's storage, start the new
    images; a run then executes in the new user-code image."""
    old_image_id = sh(["docker", "inspect", "-f", "{{.Image}}", "etl_assets_user_code"]).strip()
    compose("stop", "-t", "30", "daemon", timeout=120)
    out = compose("run", "--rm", "-T", "--no-deps", "daemon", "dagster", "instance", "migrate", timeout=300)
    log(f"dagster instance migrate: {out.strip().splitlines()[-1] if out.strip() else '(no output)'}")
    compose("up", "-d", timeout=600, env={"ETL_USER_CODE_IMAGE": new_image})
    image = sh(["docker", "inspect", "-f", "{{.Config.Image}}", "etl_assets_user_code"]).strip()
    expect(image.endswith(new_image), f"user_code running {new_image}", image)
    wait_for(
        "user_code and daemon healthy",
        lambda: all(
            "healthy" == sh(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid]).strip()
            for cid in compose("ps", "-q", "user_code", "daemon").split()
        ),
        300,
        3,
    )
    wait_for("the code location reloaded", dagster.location_loaded, 180)
    run_id = dagster.launch("upgrade", assets=["contacts_table"])
    dagster.expect_success(run_id)
    containers = run_containers(run_id)
    expect(
        [c.image.split("/")[-1] for c in containers] == [new_image.split("/")[-1]],
        f"the run in one container of {new_image}",
        containers,
    )
    # Not merely a second name for the same image: the run's image is the new one.
    run_image_id = sh(["docker", "inspect", "-f", "{{.Image}}", containers[0].id]).strip()
    new_image_id = sh(["docker", "image", "inspect", "-f", "{{.Id}}", new_image]).strip()
    expect(
        run_image_id == new_image_id != old_image_id,
        f"the run's image {new_image} ({new_image_id[:19]}), not the old one ({old_image_id[:19]})",
        run_image_id[:19],
    )
    log(f"run {run_id} SUCCESS in {new_image} ({new_image_id[:19]})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["proxy", "cancel", "crash", "queue", "mysql-restart", "upgrade"])
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('ETL_STACK_WEB_PORT', '13000')}/graphql")
    parser.add_argument("--new-image", default="etl-assets-user-code:0.1.1", help="upgrade: the new user-code tag")
    args = parser.parse_args(argv)
    dagster = Dagster(args.url)
    scenarios: dict[str, Callable[[], None]] = {
        "proxy": lambda: scenario_proxy(dagster),
        "cancel": lambda: scenario_cancel(dagster),
        "crash": lambda: scenario_crash(dagster),
        "queue": lambda: scenario_queue(dagster),
        "mysql-restart": lambda: scenario_mysql_restart(dagster),
        "upgrade": lambda: scenario_upgrade(dagster, args.new_image),
    }
    try:
        scenarios[args.scenario]()
    except (ScenarioFailed, urllib.error.URLError, subprocess.TimeoutExpired) as exc:
        log(f"FAIL {args.scenario}: {exc}")
        return 1
    log(f"{args.scenario}: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
