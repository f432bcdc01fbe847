"""The ECS instance (deploy/ecs/dagster.yaml) is valid Dagster config and means what compose's does.

The whole file must load as a Dagster instance config, its run launcher's config must pass
EcsRunLauncher's own config schema (and the compute log manager's its), everything but the
launcher and compute logs must be deploy/dagster.yaml's, run tasks must get every variable a
compose run container gets, and no pipeline secret may become an environment variable.
Pure and fast: nothing is created on AWS (the classes are never instantiated).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import validate_config

from etl_assets import settings

pytestmark = pytest.mark.fast  # pure: no service, no subprocess

ROOT = Path(__file__).resolve().parents[1]
ECS_INSTANCE = ROOT / "deploy" / "ecs" / "dagster.yaml"
COMPOSE_INSTANCE = ROOT / "deploy" / "dagster.yaml"
# The blocks that do not depend on where runs execute.
SHARED_BLOCKS = ("storage", "run_coordinator", "concurrency", "run_monitoring", "retention", "telemetry", "python_logs")
# DockerRunLauncher passes these to runs; the ECS launcher passes them otherwise.
NOT_IN_ENV_VARS = {"DAGSTER_PG_PASSWORD_FILE": "no secret files on Fargate: DAGSTER_PG_PASSWORD is an ECS secret"}
ONLY_IN_ENV_VARS = {"ETL_COMPUTE_LOGS_BUCKET": "the run worker writes its compute logs to S3"}


@pytest.fixture
def ecs() -> dict:
    # Function scope: a test may change its copy.
    return yaml.safe_load(ECS_INSTANCE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_INSTANCE.read_text())


def _env_sources(node: Any) -> Iterator[str]:
    """Names of the `{env: NAME}` values in a config tree."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            yield node["env"]
        for value in node.values():
            yield from _env_sources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_sources(item)


def _names(env_vars: list[str]) -> set[str]:
    return {entry.split("=", 1)[0] for entry in env_vars}


def launcher_errors(config: dict) -> list[str]:
    from dagster_aws.ecs import EcsRunLauncher

    result = validate_config(EcsRunLauncher.config_type(), config)
    return [error.message for error in result.errors or []]


def test_whole_file_is_a_valid_instance_config(ecs, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    # Dagster resolves `env:` while loading; placeholders stand in for the tasks' environment.
    for name in set(_env_sources(ecs)):
        monkeypatch.setenv(name, "placeholder")
    validated, _ = dagster_instance_config(str(ECS_INSTANCE.parent))
    assert validated["run_launcher"]["class"] == "EcsRunLauncher"
    assert validated["run_launcher"]["module"] == "dagster_aws.ecs"


def test_run_launcher_config_passes_ecs_run_launchers_schema(ecs):
    errors = launcher_errors(ecs["run_launcher"]["config"])
    assert not errors, "run_launcher.config is not EcsRunLauncher config:\n" + "\n".join(errors)


def test_the_schema_check_catches_a_wrong_key(ecs):
    config = ecs["run_launcher"]["config"]
    config["run_resources"]["memory"] = 4096  # a string in ECS' API
    config["include_sidecar"] = False
    errors = launcher_errors(config)
    assert any("include_sidecar" in e for e in errors), errors
    assert any("memory" in e for e in errors), errors


def test_compute_logs_config_passes_its_schema(ecs):
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    compute_logs = ecs["compute_logs"]
    assert (compute_logs["module"], compute_logs["class"]) == (
        "dagster_aws.s3.compute_log_manager",
        "S3ComputeLogManager",
    )
    result = validate_config(S3ComputeLogManager.config_type(), compute_logs["config"])
    assert result.success, [error.message for error in result.errors or []]


@pytest.mark.parametrize("block", SHARED_BLOCKS)
def test_shared_block_equals_compose(ecs, compose, block):
    assert ecs[block] == compose[block], f"deploy/ecs/dagster.yaml's {block} differs from deploy/dagster.yaml's"


def test_run_tasks_get_every_variable_a_compose_run_gets(ecs, compose):
    ecs_names = _names(ecs["run_launcher"]["config"]["env_vars"])
    expected = (_names(compose["run_launcher"]["config"]["env_vars"]) - set(NOT_IN_ENV_VARS)) | set(ONLY_IN_ENV_VARS)
    assert not expected - ecs_names, f"not passed to ECS run tasks: {sorted(expected - ecs_names)}"
    assert not ecs_names - expected, f"passed to ECS run tasks, not to compose runs: {sorted(ecs_names - expected)}"


def test_run_worker_can_resolve_the_instance(ecs):
    """A run task loads this same file: every `env:` outside the launcher's own config must reach it."""
    launcher = ecs["run_launcher"]["config"]
    given = _names(launcher["env_vars"]) | {secret["name"] for secret in launcher["secrets"]}
    needed = set(_env_sources({key: value for key, value in ecs.items() if key != "run_launcher"}))
    assert needed <= given, f"run tasks would lack: {sorted(needed - given)}"


def test_pipeline_secrets_stay_in_secrets_manager(ecs):
    launcher = ecs["run_launcher"]["config"]
    assert "ETL_SECRETS_BACKEND=aws" in launcher["env_vars"], "Fargate has no secret files: use the aws backend"
    fixed = {entry.split("=", 1)[0] for entry in launcher["env_vars"] if "=" in entry}
    assert fixed == {"ETL_SECRETS_BACKEND"}, f"values fixed in the file, not taken from the daemon: {sorted(fixed)}"
    assert not _names(launcher["env_vars"]) & settings.SECRETS, "a pipeline secret as an environment variable"
    # Only Dagster's own Postgres password is injected by ECS, by reference (an ARN from the environment).
    assert launcher["secrets"] == [
        {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"env": "DAGSTER_PG_PASSWORD_SECRET_ARN"}}
    ]
    # secrets_tag defaults to "dagster": every secret so tagged would land in the run's environment.
    assert launcher.get("secrets_tag", "dagster") is None, "secrets_tag must be null"
    assert launcher["include_sidecars"] is False
