#!/usr/bin/env bash
# Stack test of the compose deployment (CI runs it from .ci/run).
#
#  1. container engine up (scripts/container_engine.sh: rootful Podman + Docker API)
#  2. stand-in base images (scripts/build_standin_images.sh; cached)
#  3. build the images (user code, Dagster system, test fakes)
#  4. start docker-compose.yml + docker-compose.test.yml, wait until every
#     service is healthy
#  5. launch `daily_etl` through the webserver's GraphQL API and poll it
#  6. assert: the run succeeded; it executed in a container of its own created
#     by DockerRunLauncher (labelled with the run id, the run's
#     docker/container_id tag, exit 0, not a compose service); MySQL in the
#     stack holds the contacts; the HubSpot fake received them
#  7. least privilege: only docker_proxy mounts the engine's socket, and the
#     proxy answers 403 to what the launcher and the janitor do not need
#  8. faults (scripts/stack_faults.py, one timed step each): cancel mid-sync,
#     crash (docker kill) under a load, daemon restart with a queue, MySQL
#     restart under a load
#  9. upgrade: a second user-code tag, `dagster instance migrate`, a run in it
# 10. tear everything down (containers, volumes, networks) -- also on failure
#
# Idempotent: leftovers of an interrupted run are removed first.  Timings go to
# $ETL_STACK_ARTIFACTS/timings.log (default test-artifacts/stack/), with the
# compose and run-container logs when something fails.
#
# Knobs: ETL_STACK_WEB_PORT (published webserver port, default 13000),
#        ETL_STACK_RUN_TIMEOUT (s, default 900), ETL_STACK_KEEP=1 (leave the stack up).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ART="${ETL_STACK_ARTIFACTS:-$ROOT/test-artifacts/stack}"
mkdir -p "$ART"
TIMINGS="$ART/timings.log"   # appended across runs; everything else is this run's
find "$ART" -maxdepth 1 -type f ! -name timings.log -delete
export COMPOSE_PROJECT_NAME="${ETL_STACK_PROJECT:-etl_assets_stacktest}"
WEB_PORT="${ETL_STACK_WEB_PORT:-13000}"
RUN_TIMEOUT="${ETL_STACK_RUN_TIMEOUT:-900}"
HEALTH_TIMEOUT="${ETL_STACK_HEALTH_TIMEOUT:-420}"
NETWORK=etl_assets_network
USER_CODE_IMAGE=etl-assets-user-code:0.1.0

T_START=$(date +%s)
STEP=""
STEP_T0=0
FAILED_AT=""
log() { echo "[stack_test $(date +%H:%M:%S)] $*"; }
step() { STEP="$1"; STEP_T0=$(date +%s); log "== $STEP"; }
step_done() { printf '  %-34s %5ss\n' "$STEP" "$(( $(date +%s) - STEP_T0 ))" | tee -a "$TIMINGS"; STEP=""; }
fail() { log "FAIL: $*"; FAILED_AT="${STEP:-?}"; exit 1; }

compose() {
    docker-compose --env-file "$ROOT/.env.example" \
        -f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.test.yml" "$@"
}

SECRETS_DIR=""
teardown() {
    # Run containers first: they hold the network and take mounts from user_code.
    docker ps -aq --filter "label=org.etl-assets.role=run" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker ps -aq --filter "label=dagster/run_id" | xargs -r docker rm -f >/dev/null 2>&1 || true
    compose down -v --remove-orphans -t 10 >/dev/null 2>&1 || true
    docker rm -f etl_assets_user_code >/dev/null 2>&1 || true
    docker network rm "$NETWORK" etl_assets_docker_api >/dev/null 2>&1 || true
    for v in etl_assets_mysql_data etl_assets_postgres_data etl_assets_data etl_assets_dagster_storage; do
        docker volume rm -f "$v" >/dev/null 2>&1 || true
    done
}

collect_logs() {
    log "collecting logs into $ART"
    compose ps >"$ART/compose-ps.txt" 2>&1 || true
    compose logs --no-color >"$ART/compose.log" 2>&1 || true
    for c in $(docker ps -aq --filter "label=dagster/run_id" 2>/dev/null); do
        docker logs "$c" >"$ART/run-container-$c.log" 2>&1 || true
        docker inspect "$c" >"$ART/run-container-$c.json" 2>&1 || true
    done
}

on_exit() {
    local rc=$?
    set +e
    [ -n "$STEP" ] && [ "$rc" != 0 ] && FAILED_AT="${FAILED_AT:-$STEP}"
    if [ "$rc" != 0 ] && docker version >/dev/null 2>&1; then collect_logs; fi
    if [ "${ETL_STACK_KEEP:-0}" = 1 ]; then
        log "ETL_STACK_KEEP=1: stack left running (project $COMPOSE_PROJECT_NAME, secrets in $SECRETS_DIR)"
    else
        local t0; t0=$(date +%s)
        if docker version >/dev/null 2>&1; then teardown; fi
        [ -n "$SECRETS_DIR" ] && rm -rf "$SECRETS_DIR"
        printf '  %-34s %5ss\n' "teardown" "$(( $(date +%s) - t0 ))" | tee -a "$TIMINGS"
    fi
    printf '  %-34s %5ss  (%s)\n' "TOTAL" "$(( $(date +%s) - T_START ))" \
        "$([ "$rc" = 0 ] && echo passed || echo "FAILED at: ${FAILED_AT:-?}")" | tee -a "$TIMINGS"
    if [ "$rc" = 0 ]; then
        echo "stack_test: 1 passed, 0 failed"
    else
        echo "stack_test: 0 passed, 1 failed"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

echo "# stack test $(date -u +%FT%TZ) on $(hostname)" >>"$TIMINGS"

# --- 1. engine ---------------------------------------------------------------
step "container engine"
eval "$(scripts/container_engine.sh)"
export DOCKER_HOST DOCKER_SOCKET DOCKER_SOCKET_GID
step_done

# --- 2. stand-ins ------------------------------------------------------------
step "stand-in base images"
scripts/build_standin_images.sh
step_done

step "clean leftovers"
teardown
step_done

# Secrets of this test stack, with the owners and modes docker/README.md tells a deployment
# to give them (scripts/secure_secrets.sh).
SECRETS_DIR="$(mktemp -d /tmp/etl-stack-secrets.XXXXXX)"
for s in MYSQL_ROOT_PASSWORD ETL_DATABASE_PASSWORD DAGSTER_PG_PASSWORD; do
    head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRETS_DIR/$s"
done
HUBSPOT_TOKEN="stack-test-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$HUBSPOT_TOKEN" >"$SECRETS_DIR/HUBSPOT_ACCESS_TOKEN"
: >"$SECRETS_DIR/KAGGLE_KEY"        # Kaggle stays on the packaged sample dataset
: >"$SECRETS_DIR/KAGGLE_API_TOKEN"
: >"$SECRETS_DIR/ETL_ALERT_WEBHOOK_URL"
: >"$SECRETS_DIR/ETL_DATADOG_API_KEY"   # no Datadog shipping
bash scripts/secure_secrets.sh "$SECRETS_DIR"
export ETL_SECRETS_HOST_DIR="$SECRETS_DIR"
export DAGSTER_WEBSERVER_BIND=127.0.0.1 DAGSTER_WEBSERVER_PORT="$WEB_PORT"

# --- 3. images ---------------------------------------------------------------
step "build images"
compose build >"$ART/build.log" 2>&1 || { tail -n 60 "$ART/build.log"; fail "image build failed (see $ART/build.log)"; }
# Images the rebuild replaced (untagged, unused); build-cache layers are kept.
docker image prune -f >/dev/null 2>&1 || true
step_done
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'etl-assets-' | sed 's/^/  image /' | tee -a "$TIMINGS"

# --- 4. stack up, healthy ------------------------------------------------------
step "stack up"
compose up -d >"$ART/up.log" 2>&1 || { cat "$ART/up.log"; fail "compose up failed"; }
step_done

step "all services healthy"
deadline=$(( $(date +%s) + HEALTH_TIMEOUT ))
while :; do
    ids="$(compose ps -q)"
    [ -n "$ids" ] || fail "no containers"
    # shellcheck disable=SC2086
    states="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' $ids)"
    pending="$(echo "$states" | awk '$2 != "running" || ($3 != "healthy" && $3 != "none")')"
    [ -z "$pending" ] && break
    if echo "$states" | awk '$2 == "exited" || $2 == "dead" || $3 == "unhealthy"' | grep -q .; then
        echo "$states"; fail "a service died or is unhealthy"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$states"; fail "services not healthy after ${HEALTH_TIMEOUT}s"; }
    sleep 3
done
echo "$states" | sed 's/^/  /'
step_done

# --- 5. launch daily_etl through the webserver -----------------------------------
step "launch daily_etl (GraphQL) and wait"
GRAPHQL_URL="http://127.0.0.1:$WEB_PORT/graphql"
python3 - "$GRAPHQL_URL" "$RUN_TIMEOUT" "$ART/run.json" <<'PY'
import json, subprocess, sys, time, urllib.request

url, timeout, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]

def gql(query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc = json.load(resp)
    if doc.get("errors"):
        raise SystemExit(f"GraphQL errors: {doc['errors']}")
    return doc["data"]

# The code location must be loaded before a run can be launched from it.
deadline = time.time() + 180
while True:
    data = gql("""{ workspaceOrError { __typename ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
    entries = data["workspaceOrError"].get("locationEntries", [])
    loaded = [e for e in entries if e["name"] == "etl_assets" and e["loadStatus"] == "LOADED"]
    if loaded and loaded[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
        break
    if loaded and loaded[0]["locationOrLoadError"]["__typename"] == "PythonError":
        raise SystemExit(f"code location failed to load: {loaded[0]['locationOrLoadError']['message']}")
    if time.time() > deadline:
        raise SystemExit(f"code location not loaded: {entries}")
    time.sleep(2)

launched = gql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message } } }""",
    {"p": {"selector": {"repositoryLocationName": "etl_assets",
                        "repositoryName": "__repository__", "jobName": "daily_etl"},
           "runConfigData": {},
           "executionMetadata": {"tags": [{"key": "etl_assets/stack_test", "value": "true"}]}}})
result = launched["launchRun"]
if result["__typename"] != "LaunchRunSuccess":
    raise SystemExit(f"launchRun failed: {json.dumps(result, indent=1)}")
run_id = result["run"]["runId"]
print(f"  launched run {run_id} (status {result['run']['status']})", flush=True)

def run_container(run_id):
    """(id, state) of the run's container, if DockerRunLauncher made one yet."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=dagster/run_id={run_id}", "--format", "{{.ID}} {{.State}}"],
        capture_output=True, text=True).stdout.split()
    return (out[0], out[1]) if len(out) >= 2 else (None, None)

seen = None
exited_at = None
deadline = time.time() + timeout
while True:
    run = gql("""query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
        runId status startTime endTime tags { key value } } } }""", {"id": run_id})["runOrError"]
    if run["status"] != seen:
        print(f"  run status {run['status']}", flush=True)
        seen = run["status"]
    if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
        break
    if time.time() > deadline:
        raise SystemExit(f"run {run_id} still {run['status']} after {timeout:.0f}s")
    # A run worker that died leaves the run STARTING/STARTED until run monitoring
    # notices (minutes): fail fast, with the container's last words.
    cid, state = run_container(run_id)
    if state in ("exited", "dead"):
        exited_at = exited_at or time.time()
        if time.time() - exited_at > 45:
            logs = subprocess.run(["docker", "logs", "--tail", "40", cid], capture_output=True, text=True)
            print(logs.stdout[-6000:], logs.stderr[-6000:])
            raise SystemExit(f"run container {cid} {state} but run {run_id} is still {run['status']}")
    time.sleep(3)

events = gql("""query($id: ID!) { logsForRun(runId: $id, limit: 2000) { __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message level }
        ... on StepEvent { stepKey } } } } }""", {"id": run_id})["logsForRun"]
run["events"] = events.get("events", [])
with open(out, "w") as fh:
    json.dump(run, fh, indent=1)
if run["status"] != "SUCCESS":
    for e in run["events"]:
        if e.get("level") in ("ERROR", "CRITICAL"):
            print("  ", e["__typename"], e.get("stepKey"), (e.get("message") or "")[:2000])
    raise SystemExit(f"run {run_id} ended {run['status']}")
PY
RUN_ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runId"])' "$ART/run.json")"
step_done

# --- 6. assertions ----------------------------------------------------------------
step "assertions"
tag() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print({t["key"]: t["value"] for t in r["tags"]}.get(sys.argv[2], ""))' "$ART/run.json" "$1"; }

# 6a. its own container, made by DockerRunLauncher
containers="$(docker ps -aq --no-trunc --filter "label=dagster/run_id=$RUN_ID")"
[ "$(echo "$containers" | grep -c .)" = 1 ] || fail "expected 1 container labelled dagster/run_id=$RUN_ID, got: '$containers'"
cid="$containers"
[ "$(tag docker/container_id)" = "$cid" ] || fail "run tag docker/container_id=$(tag docker/container_id) is not container $cid"
# The run worker reports SUCCESS a moment before its process (and container) ends.
timeout 120 docker wait "$cid" >/dev/null || fail "run container $cid still running 120s after the run ended"
read -r c_image c_status c_exit c_service c_name <<<"$(docker inspect -f \
    '{{.Config.Image}} {{.State.Status}} {{.State.ExitCode}} {{if index .Config.Labels "com.docker.compose.service"}}{{index .Config.Labels "com.docker.compose.service"}}{{else}}-{{end}} {{.Name}}' "$cid")"
case "$c_image" in *"$USER_CODE_IMAGE") ;; *) fail "run container image $c_image is not $USER_CODE_IMAGE" ;; esac
[ "$c_service" = - ] || fail "run container belongs to compose service $c_service"
[ "$c_status" = exited ] && [ "$c_exit" = 0 ] || fail "run container $c_name: status $c_status, exit $c_exit"
docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$cid" | grep -qw "$NETWORK" \
    || fail "run container not on $NETWORK"
log "run $RUN_ID executed in its own container $c_name (${cid:0:12}, image $c_image, exit $c_exit)"
python3 - "$ART/run.json" <<'PY' || fail "no DockerRunLauncher launch event in the run's log"
import json, sys
run = json.load(open(sys.argv[1]))
assert any("Launching run in a new container" in (e.get("message") or "") for e in run["events"])
PY
[ "$(tag etl_assets/hubspot_sync)" = true ] || fail "run lacks the etl_assets/hubspot_sync tag the run queue limits"

# 6b. MySQL inside the stack holds the contacts
mysql_q() {
    compose exec -T mysql sh -c 'mysql -h 127.0.0.1 -u"$MYSQL_USER" -p"$(cat /run/secrets/ETL_DATABASE_PASSWORD)" -N -B -e "$1" "$MYSQL_DATABASE"' sh "$1"
}
contacts="$(mysql_q 'SELECT COUNT(*) FROM contacts' | tr -d '\r')"
[ "${contacts:-0}" -gt 0 ] 2>/dev/null || fail "MySQL contacts count is '$contacts'"
log "MySQL: contacts has $contacts rows"

# 6c. the HubSpot fake received them
state="$(compose exec -T hubspot python -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8081/state", timeout=5).read().decode())' | tr -d '\r')"
echo "$state" >"$ART/hubspot-state.json"
hs_contacts="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["contacts"])' "$state")"
hs_upserts="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["upsert_requests"])' "$state")"
[ "$hs_contacts" -gt 0 ] || fail "HubSpot fake holds no contacts: $state"
[ "$hs_contacts" -le "$contacts" ] || fail "HubSpot fake holds $hs_contacts contacts, more than MySQL's $contacts"
log "HubSpot fake: $hs_contacts contacts from $hs_upserts batch upserts (MySQL: $contacts)"
synced="$(mysql_q "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'synced'" 2>/dev/null | tr -d '\r' || true)"
if [ -n "$synced" ] && [ "$synced" -gt 0 ] 2>/dev/null; then
    [ "$synced" = "$hs_contacts" ] || fail "hubspot_sync_state says $synced synced, the fake holds $hs_contacts"
    log "hubspot_sync_state: $synced synced, matching the fake"
fi
step_done

echo "  run $RUN_ID: SUCCESS; contacts in MySQL: $contacts; in HubSpot fake: $hs_contacts" | tee -a "$TIMINGS"

# --- 7.-9. least privilege, faults, upgrade (scripts/stack_faults.py) ------------------
export ETL_STACK_WEB_PORT="$WEB_PORT"
faults() { python3 "$ROOT/scripts/stack_faults.py" "$@" --url "$GRAPHQL_URL"; }

step "docker API only through the proxy"
faults proxy || fail "Docker API least privilege (see above)"
step_done

step "fault: cancel mid-sync"
faults cancel || fail "run terminated during hubspot_contacts (see above)"
step_done

step "fault: crash under a load"
faults crash || fail "run container killed under a load (see above)"
step_done

step "fault: daemon restart, queue"
faults queue || fail "daemon restart with a queue (see above)"
step_done

step "fault: mysql restart under a load"
faults mysql-restart || fail "MySQL restart under a load (see above)"
step_done

# The next version of the user code: the same Dockerfile, told apart by a label.
NEW_USER_CODE_IMAGE=etl-assets-user-code:0.1.1
step "upgrade: build $NEW_USER_CODE_IMAGE"
docker build -q -f docker/Dockerfile.user_code --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}" \
    --label org.etl-assets.stack-test-version=0.1.1 -t "$NEW_USER_CODE_IMAGE" . >"$ART/build-upgrade.log" 2>&1 \
    || { tail -n 40 "$ART/build-upgrade.log"; fail "build of $NEW_USER_CODE_IMAGE failed"; }
step_done

step "upgrade: migrate, switch, run"
faults upgrade --new-image "$NEW_USER_CODE_IMAGE" || fail "upgrade to $NEW_USER_CODE_IMAGE (see above)"
step_done
