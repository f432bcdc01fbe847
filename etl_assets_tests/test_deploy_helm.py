"""The Helm values for Dagster's chart (deploy/helm/values.yaml) are valid and mean what compose does.

"The Helm values check": values.yaml is validated against the chart's own JSON schema,
deploy/helm/dagster-values.schema.json, a verbatim copy of helm/dagster/values.schema.json from
github.com/dagster-io/dagster at commit 2bdb239558bfe98dc2a89e2e0c2f3f849367fdd4 (Apache-2.0;
provenance in deploy/helm/README.md).  Helm validates the chart's defaults merged with the
user's values, never the user's file alone; the test mirrors that merge (see `helm_view`).
Then the values are held to deploy/dagster.yaml and docker-compose.yml: the same run queue,
tag limit and run monitoring, the same image, every variable a compose run gets, no secret
written down.  Pure and fast: no cluster, no helm binary, no network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from etl_assets import settings

pytestmark = pytest.mark.fast  # pure: no service, no subprocess

ROOT = Path(__file__).resolve().parents[1]
HELM = ROOT / "deploy" / "helm"
VALUES = HELM / "values.yaml"
ENV_FILE = HELM / "etl-assets.env"
SCHEMA = HELM / "dagster-values.schema.json"
SCHEMA_SHA256 = "6d9aadb17881f23a96cdc0df89e3c4a5aa65e5b4a010b2eada443f6884c27ee1"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_INSTANCE = ROOT / "deploy" / "dagster.yaml"
COMPOSE_WORKSPACE = ROOT / "deploy" / "workspace.yaml"

CONFIG_MAP = "etl-assets-env"
SECRET = "etl-assets-secrets"
# DockerRunLauncher passes these to runs; on Kubernetes the chart covers them itself.
NOT_IN_CONFIG_MAP = {
    "DAGSTER_PG_USER": "the chart writes Dagster's storage config from postgresql.* values",
    "DAGSTER_PG_HOST": "likewise",
    "DAGSTER_PG_DB": "likewise",
    "DAGSTER_PG_PASSWORD_FILE": "the chart injects DAGSTER_PG_PASSWORD from global.postgresqlSecretName",
}

# The chart's schema refers to Kubernetes' types by URL; CI cannot fetch them.  These are the
# types values.yaml uses, with the Kubernetes v1.19 API's field names (ours, not upstream's);
# any other referenced type is left unconstrained.
K8S_URL = "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.19.0/_definitions.json"
_STR, _INT, _BOOL, _OBJ = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "object"}
_KEY_TO_PATH = {
    "type": "object",
    "required": ["key", "path"],
    "properties": {"key": _STR, "path": _STR, "mode": _INT},
    "additionalProperties": False,
}
K8S_TYPES: dict[str, dict] = {
    "io.k8s.api.core.v1.Volume": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _STR,
            "secret": {
                "type": "object",
                "properties": {
                    "secretName": _STR,
                    "defaultMode": {"type": "integer", "minimum": 0, "maximum": 0o777},
                    "items": {"type": "array", "items": _KEY_TO_PATH},
                    "optional": _BOOL,
                },
                "additionalProperties": False,
            },
            "emptyDir": {
                "type": "object",
                "properties": {"medium": _STR, "sizeLimit": {"type": ["string", "integer"]}},
                "additionalProperties": False,
            },
        },
    },
    "io.k8s.api.core.v1.VolumeMount": {
        "type": "object",
        "required": ["name", "mountPath"],
        "properties": {
            "name": _STR,
            "mountPath": _STR,
            "readOnly": _BOOL,
            "subPath": _STR,
            "subPathExpr": _STR,
            "mountPropagation": _STR,
        },
        "additionalProperties": False,
    },
    "io.k8s.api.core.v1.ConfigMapEnvSource": {
        "type": "object",
        "properties": {"name": _STR, "optional": _BOOL},
        "additionalProperties": False,
    },
    "io.k8s.api.core.v1.SecretEnvSource": {
        "type": "object",
        "properties": {"name": _STR, "optional": _BOOL},
        "additionalProperties": False,
    },
    "io.k8s.api.core.v1.LocalObjectReference": {
        "type": "object",
        "properties": {"name": _STR},
        "additionalProperties": False,
    },
    "io.k8s.api.core.v1.EnvVar": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": _STR, "value": _STR, "valueFrom": _OBJ},
        "additionalProperties": False,
    },
    "io.k8s.api.core.v1.PodSecurityContext": {
        "type": "object",
        "properties": {
            "fsGroup": _INT,
            "fsGroupChangePolicy": _STR,
            "runAsGroup": _INT,
            "runAsNonRoot": _BOOL,
            "runAsUser": _INT,
            "seLinuxOptions": _OBJ,
            "seccompProfile": _OBJ,
            "supplementalGroups": {"type": "array", "items": _INT},
            "sysctls": {"type": "array"},
            "windowsOptions": _OBJ,
        },
        "additionalProperties": False,
    },
    "io.k8s.api.core.v1.ResourceRequirements": {
        "type": "object",
        "properties": {"limits": _OBJ, "requests": _OBJ},
        "additionalProperties": False,
    },
}

_MERGED = "__with_chart_defaults"
_LITERAL_KEYWORDS = {"default", "const", "enum", "examples", "title", "description"}


def helm_view(schema: dict) -> dict:
    """The schema as Helm applies it to a values *override* file, offline.

    Helm coalesces the chart's default values.yaml with the user's before validating, so a key
    the chart's defaults supply is never missing: `required` is dropped wherever the defaults
    merge in, i.e. along maps from the root.  List items are not merged with anything (Helm
    replaces lists whole), so inside `items` every `required` stays.  Shared `$defs` therefore
    come in two variants.  Remote Kubernetes `$ref`s become K8S_TYPES (or nothing).
    """
    defs = schema["$defs"]
    out: dict[str, Any] = {}

    def variant(name: str, merged: bool) -> str:
        key = name + _MERGED if merged else name
        if key not in out:
            out[key] = {}  # placeholder against recursion
            out[key] = walk(defs[name], merged)
        return key

    def walk(node: Any, merged: bool) -> Any:
        if isinstance(node, list):
            return [walk(item, merged) for item in node]
        if not isinstance(node, dict):
            return node
        new: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and value.startswith("#/$defs/"):
                new[key] = "#/$defs/" + variant(value.removeprefix("#/$defs/"), merged)
            elif key == "$ref" and value.startswith(K8S_URL):
                k8s_type = K8S_TYPES.get(value.rsplit("/", 1)[-1])
                if k8s_type is not None:
                    new.setdefault("allOf", []).append(copy.deepcopy(k8s_type))
            elif key == "required" and merged:
                continue
            elif key == "items":
                new[key] = walk(value, False)
            elif key in ("properties", "$defs"):
                new[key] = {name: walk(sub, merged) for name, sub in value.items()}
            elif key in _LITERAL_KEYWORDS:
                new[key] = value
            else:
                new[key] = walk(value, merged)
        return new

    root = walk({k: v for k, v in schema.items() if k != "$defs"}, True)
    unresolved = [ref for ref in _refs(root) if not ref.startswith("#/")]
    assert not unresolved, f"remote $refs left in the schema: {unresolved[:3]}"
    root["$defs"] = out
    return root


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def schema_errors(values: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(helm_view(schema))
    # For an anyOf (most keys are "X or null"), the failing branch's own error says what is wrong.
    leaves = [jsonschema.exceptions.best_match([error]) for error in validator.iter_errors(values)]
    return sorted(f"{'.'.join(map(str, leaf.absolute_path)) or '<root>'}: {leaf.message}" for leaf in leaves)


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines as `kubectl create configmap --from-env-file` reads them."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{path.name}:{number}: not NAME=value"
        assert name not in entries, f"{path.name}:{number}: {name} set twice"
        entries[name] = value
    return entries


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


@pytest.fixture
def values() -> dict:
    # Function scope: a test may change its copy.
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def env_file() -> dict[str, str]:
    return read_env_file(ENV_FILE)


@pytest.fixture(scope="module")
def instance() -> dict:
    return yaml.safe_load(COMPOSE_INSTANCE.read_text())


def _deployment(values: dict) -> dict:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "one code location, etl_assets"
    return deployments[0]


def _k8s_launcher(values: dict) -> dict:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    return values["runLauncher"]["config"]["k8sRunLauncher"]


def test_vendored_schema_is_the_upstream_file(schema):
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, (
        "deploy/helm/dagster-values.schema.json changed: it must stay a verbatim copy of the chart's "
        "values.schema.json; when replacing it, update deploy/helm/README.md and SCHEMA_SHA256"
    )
    assert schema["title"] == "DagsterHelmValues"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_values_match_the_chart_schema(values, schema):
    errors = schema_errors(values, schema)
    assert not errors, "deploy/helm/values.yaml does not match the chart's schema:\n" + "\n".join(errors)


def test_schema_view_keeps_list_items_strict(values, schema):
    """Dropping `required` for the chart's defaults must not reach into lists (nothing merges there)."""
    del _deployment(values)["port"]
    assert any("'port' is a required property" in e for e in schema_errors(values, schema))
    del _k8s_launcher(values)["volumeMounts"][0]["mountPath"]
    assert any("'mountPath' is a required property" in e for e in schema_errors(values, schema))


def test_only_keys_the_chart_knows(values, schema):
    """Where the schema lets unknown keys through (the root, a deployment), a misspelt key would be ignored."""
    unknown_top = set(values) - set(schema["properties"])
    assert not unknown_top, f"top-level keys the chart does not have: {sorted(unknown_top)}"
    unknown = set(_deployment(values)) - set(schema["$defs"]["UserDeployment"]["properties"])
    assert not unknown, f"user deployment keys the chart does not have: {sorted(unknown)}"


def test_code_server_is_the_compose_user_code_image(values):
    compose_image = yaml.safe_load(COMPOSE.read_text())["services"]["user_code"]["image"]
    default = re.fullmatch(r"\$\{ETL_USER_CODE_IMAGE:-([^}]+)\}", compose_image)
    assert default, f"docker-compose.yml's user_code image is no longer ${{ETL_USER_CODE_IMAGE:-...}}: {compose_image}"
    name, tag = default.group(1).rsplit(":", 1)
    image = _deployment(values)["image"]
    assert image["repository"].rsplit("/", 1)[-1] == name, f"values.yaml's image {image['repository']} is not {name}"
    assert str(image["tag"]) == tag, f"values.yaml's image tag {image['tag']} is not compose's {tag}"

    workspace = yaml.safe_load(COMPOSE_WORKSPACE.read_text())["load_from"][0]["grpc_server"]
    assert _deployment(values)["port"] == workspace["port"], "the code server's port differs from compose's"
    args = _deployment(values)["codeServerArgs"]
    assert args[args.index("--module-name") + 1] == "etl_assets.definitions"
    assert not _deployment(values).get("dagsterApiGrpcArgs"), "the chart would run `dagster api grpc` instead"


def test_run_pods_get_every_variable_a_compose_run_gets(values, env_file, instance):
    docker_env = {name.split("=", 1)[0] for name in instance["run_launcher"]["config"]["env_vars"]}
    expected = docker_env - set(NOT_IN_CONFIG_MAP)
    missing = expected - set(env_file)
    assert not missing, f"in deploy/dagster.yaml's env_vars but not in {ENV_FILE.name}: {sorted(missing)}"
    extra = set(env_file) - expected
    assert not extra, f"in {ENV_FILE.name} but not in deploy/dagster.yaml's env_vars: {sorted(extra)}"

    launcher, deployment = _k8s_launcher(values), _deployment(values)
    assert launcher["envConfigMaps"] == [{"name": CONFIG_MAP}], "run pods must read the ConfigMap"
    assert deployment["envConfigMaps"] == [{"name": CONFIG_MAP}], "the code server must read the ConfigMap"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert launcher["envVars"] == [], "the daemon has none of the pipeline's settings to copy: use the ConfigMap"


def test_secrets_are_files_from_a_secret(values, env_file):
    assert env_file["ETL_SECRETS_BACKEND"] == "files", "the Secret is mounted as files: ETL_SECRETS_BACKEND=files"
    launcher, deployment = _k8s_launcher(values), _deployment(values)
    for where, spec in (("runLauncher", launcher), ("the code server", deployment)):
        assert spec["envSecrets"] == [], f"{where}: secrets as environment variables"
        secret_volumes = [v["name"] for v in spec["volumes"] if v.get("secret", {}).get("secretName") == SECRET]
        assert len(secret_volumes) == 1, f"{where}: no volume of the Secret {SECRET}"
        mounts = [m for m in spec["volumeMounts"] if m["name"] == secret_volumes[0]]
        assert mounts and mounts[0]["mountPath"] == env_file["ETL_SECRETS_DIR"], (
            f"{where}: the Secret is not mounted at ETL_SECRETS_DIR ({env_file['ETL_SECRETS_DIR']})"
        )
        assert mounts[0].get("readOnly") is True, f"{where}: the secret mount is writable"
    # Run pods see exactly the code server's files and user, as compose's volumes_from gives.
    assert launcher["volumes"] == deployment["volumes"]
    assert launcher["volumeMounts"] == deployment["volumeMounts"]
    assert launcher["runK8sConfig"]["podSpecConfig"]["securityContext"] == deployment["podSecurityContext"]
    assert not env_file["ETL_SECRETS_DIR"].startswith(("/run/secrets", "/var/run/secrets")), (
        "Kubernetes mounts the service account token under /var/run/secrets (= /run/secrets on Debian)"
    )


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}[{index}]")


def test_no_secret_is_written_down(values, env_file):
    secret_names = settings.SECRETS | {"DAGSTER_PG_PASSWORD", "MYSQL_ROOT_PASSWORD"}
    in_env_file = secret_names & set(env_file)
    assert not in_env_file, f"secrets in {ENV_FILE.name} (a ConfigMap is not secret): {sorted(in_env_file)}"
    assert sa.make_url(env_file["ETL_DATABASE_URL"]).password is None, "ETL_DATABASE_URL carries a password"
    for path, key, value in _walk(values):
        assert not re.search(r"(?i)password|token|secret_?key|api_?key", str(key)) or key in (
            "postgresqlSecretName",
            "generatePostgresqlPasswordSecret",
        ), f"values.yaml sets {path}: a secret's value goes in a Kubernetes Secret"
        assert key != "name" or value not in secret_names, f"values.yaml names secret {value} at {path}"
        if key in ("env", "envVars"):
            assert not value, f"{path}: settings go in {ENV_FILE.name}, secrets in the Secret {SECRET}"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"], "Dagster's Postgres password must come from a Secret"


def test_run_queue_matches_compose(values, instance):
    from etl_assets.jobs import HUBSPOT_SYNC_TAG, daily_etl

    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]
    assert values["concurrency"]["enabled"] is True, "the chart renders `concurrency` only when enabled"
    compose_runs = instance["concurrency"]["runs"]
    assert runs["maxConcurrentRuns"] == compose_runs["max_concurrent_runs"], "max concurrent runs differ from compose's"
    assert runs["tagConcurrencyLimits"] == compose_runs["tag_concurrency_limits"], "tag limits differ from compose's"
    assert {"key": HUBSPOT_SYNC_TAG, "value": "true", "limit": 1} in runs["tagConcurrencyLimits"]
    assert daily_etl.tags.get(HUBSPOT_SYNC_TAG) == "true"
    assert pools["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]

    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert (coordinator["enabled"], coordinator["type"]) == (True, instance["run_coordinator"]["class"])
    queued = coordinator["config"]["queuedRunCoordinator"]
    # The chart fails when both places set the run limits; Dagster 1.13 wants them in `concurrency`.
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queued)
    assert queued["dequeueIntervalSeconds"] == instance["run_coordinator"]["config"]["dequeue_interval_seconds"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def test_run_monitoring_matches_compose(values, instance):
    monitoring = {_snake(key): value for key, value in values["dagsterDaemon"]["runMonitoring"].items()}
    assert monitoring == instance["run_monitoring"], "dagsterDaemon.runMonitoring differs from deploy/dagster.yaml"


def test_logs_retention_and_telemetry_match_compose(values, instance):
    assert values["pythonLogs"]["dagsterHandlerConfig"] == instance["python_logs"]["dagster_handler_config"], (
        "pythonLogs.dagsterHandlerConfig differs from deploy/dagster.yaml's python_logs"
    )
    assert values["telemetry"]["enabled"] is instance["telemetry"]["enabled"] is False, "telemetry must stay off"
    retention = values["retention"]
    assert retention["enabled"] is True
    assert retention["schedule"]["purgeAfterDays"] == instance["retention"]["schedule"]["purge_after_days"]
    # started: -1 is Dagster's default, which deploy/dagster.yaml leaves implicit.
    assert retention["sensor"]["purgeAfterDays"] == {
        **instance["retention"]["sensor"]["purge_after_days"],
        "started": -1,
    }


def test_dagster_storage_is_an_external_postgres(values, instance):
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False, "the chart would start its own Postgres"
    assert postgresql["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert postgresql["service"]["port"] == instance["storage"]["postgres"]["postgres_db"]["port"]
