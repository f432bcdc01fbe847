"""The compose deployment's files agree with each other (fast; no containers are started).

`docker-compose config` must accept docker-compose.yml (alone, and with the CI override
docker-compose.test.yml) read with .env.example, and what it resolves must line up with
deploy/dagster.yaml and deploy/workspace.yaml: every variable DockerRunLauncher copies into a
run container is set in the daemon, the launcher's network and volumes_from name what compose
creates, the run queue's tag limit matches the job's tag. The stack itself is exercised by
scripts/stack_test.sh.

Needs the `docker-compose` binary (v1, Debian's package; scripts/container_engine.sh installs
it). Without it these tests fail rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from etl_assets import settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_TEST = ROOT / "docker-compose.test.yml"
DEPLOY_INSTANCE = ROOT / "deploy" / "dagster.yaml"
DEPLOY_WORKSPACE = ROOT / "deploy" / "workspace.yaml"
SERVICES = {"mysql", "postgres", "user_code", "webserver", "daemon", "run_janitor", "docker_proxy"}
# Who may reach the Docker API (through docker_proxy): the launcher (daemon), UI termination
# (webserver) and the janitor. Nobody else is on its network.
DOCKER_API_CLIENTS = {"webserver", "daemon", "run_janitor"}
# The Docker API's network (internal) is joined only by them and the proxy.
NETWORKS = {
    "webserver": {"etl", "docker_api"},
    "daemon": {"etl", "docker_api"},
    "run_janitor": {"docker_api"},
    "docker_proxy": {"docker_api"},
}
SOCKET_GID = "4242"  # any explicit group id: the compose file has no default for it
# The package's secrets (the settings registry's), and the databases' own passwords.
SECRETS = settings.SECRETS | {"MYSQL_ROOT_PASSWORD", "DAGSTER_PG_PASSWORD"}
# Variables the package reads that compose deliberately does not pass to run containers.
NOT_PASSED = {
    settings.VAULT_TOKEN: "a Vault login goes in as a mounted file (VAULT_TOKEN_FILE), never a variable",
    settings.KAGGLE_CONFIG_DIR: "compose gives Kaggle credentials as secrets, not kaggle.json",
    settings.XDG_CONFIG_HOME: "likewise",
    settings.DAGSTER_HOME: "set by the images",
}


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed; run scripts/container_engine.sh "
            "(or `apt-get install docker-compose`) before the test suite"
        )
    return exe


def compose_config(*files: Path, env: dict[str, str] | None = None, env_file: Path | None = None) -> dict:
    result = _run_compose_config(*files, env=env, env_file=env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def _run_compose_config(
    *files: Path, env: dict[str, str] | None = None, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    args = [_docker_compose(), "--env-file", str(env_file or ROOT / ".env.example")]
    for file in files:
        args += ["-f", str(file)]
    # Only what the test chooses: no developer .env / shell settings leak in.
    clean_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    clean_env.update({"DOCKER_SOCKET_GID": SOCKET_GID} if env is None else env)
    return subprocess.run(
        [*args, "config"], cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config(COMPOSE)


@pytest.fixture(scope="module")
def instance() -> dict:
    return yaml.safe_load(DEPLOY_INSTANCE.read_text())


def test_compose_file_is_valid_and_complete(config):
    assert set(config["services"]) == SERVICES
    assert set(config["secrets"]) == SECRETS
    for name, service in config["services"].items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        expected = NETWORKS.get(name, {"etl"})
        assert set(service["networks"]) == expected, name
    assert config["networks"]["etl"]["name"] == "etl_assets_network"
    assert config["networks"]["docker_api"]["internal"] is True


def _mounts_socket(service: dict) -> bool:
    for volume in service.get("volumes", []):
        target = volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1]
        source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":")[0]
        if target.endswith(".sock") or source.endswith(".sock"):
            return True
    return False


def test_only_the_proxy_mounts_the_docker_socket(config):
    """The engine's socket is root on the host: one filtering proxy holds it, no one else."""
    services = config["services"]
    holders = {name for name, service in services.items() if _mounts_socket(service)}
    assert holders == {"docker_proxy"}
    with_groups = {name: service["group_add"] for name, service in services.items() if "group_add" in service}
    assert with_groups == {"docker_proxy": [SOCKET_GID]}
    for name in DOCKER_API_CLIENTS:
        assert services[name]["environment"]["DOCKER_HOST"] == "tcp://docker_proxy:2375", name
        assert services[name]["depends_on"]["docker_proxy"]["condition"] == "service_healthy", name
    for name in set(services) - DOCKER_API_CLIENTS:
        assert "DOCKER_HOST" not in services[name].get("environment", {}), name
    proxy = services["docker_proxy"]
    assert proxy["image"].startswith("haproxy:"), "docker_proxy runs the official haproxy image"
    assert any(
        str(v).startswith(str(ROOT / "docker" / "docker_proxy"))
        or (isinstance(v, dict) and v.get("source", "").endswith("haproxy.cfg"))
        for v in proxy["volumes"]
    )


def test_the_socket_group_has_no_default(tmp_path):
    """Without DOCKER_SOCKET_GID compose refuses to start rather than handing out group 0."""
    assert ":-0}" not in COMPOSE.read_text(encoding="utf-8")
    env_file = tmp_path / "no-gid.env"
    env_file.write_text("", encoding="utf-8")
    result = _run_compose_config(COMPOSE, env={}, env_file=env_file)
    assert result.returncode != 0
    assert "DOCKER_SOCKET_GID" in result.stderr


def test_run_containers_cannot_reach_the_proxy(config, instance):
    """Runs join only the launcher's network, which the proxy is not on."""
    assert instance["run_launcher"]["config"]["network"] == config["networks"]["etl"]["name"]
    assert "etl" not in config["services"]["docker_proxy"]["networks"]
    assert "docker_api" not in config["services"]["user_code"]["networks"]


def test_proxy_allows_only_the_launchers_and_the_janitors_calls():
    """docker/docker_proxy/haproxy.cfg: an allow-list, ending in a blanket 403."""
    cfg = (ROOT / "docker" / "docker_proxy" / "haproxy.cfg").read_text(encoding="utf-8")
    rules = [line.strip() for line in cfg.splitlines() if line.strip().startswith("http-request")]
    assert rules[-1] == "http-request deny deny_status 403"
    allowed = " ".join(rule for rule in rules if rule.startswith("http-request allow"))
    for acl in ("p_ping", "p_create", "p_start", "p_inspect", "p_list", "p_remove"):
        assert acl in allowed, acl
    for forbidden in ("exec", "images", "volumes", "networks", "build"):
        assert f"/{forbidden}" not in cfg.split("frontend", 1)[1], forbidden


def test_official_images_and_mysql_local_infile(config):
    services = config["services"]
    assert services["mysql"]["image"].startswith("mysql:8.")
    assert "--local-infile=ON" in services["mysql"]["command"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert _container_port(services["webserver"]["ports"][0]) == 3000


def _container_port(port) -> int:
    """Compose v1 prints "127.0.0.1:3000:3000/tcp", v2 a mapping with `target`."""
    if isinstance(port, dict):
        return int(port["target"])
    return int(str(port).split("/")[0].rsplit(":", 1)[-1])


def test_secrets_are_files_not_environment(config):
    services = config["services"]
    user_code_secrets = {s["source"] for s in services["user_code"]["secrets"]}
    assert {"ETL_DATABASE_PASSWORD", "HUBSPOT_ACCESS_TOKEN", "KAGGLE_KEY"} <= user_code_secrets
    for name, service in services.items():
        for variable in service.get("environment", {}):
            assert variable not in SECRETS, f"{name} has secret {variable} in its environment"
    assert services["user_code"]["environment"]["ETL_SECRETS_BACKEND"] == "files"


def test_run_launcher_matches_compose(config, instance):
    services = config["services"]
    launcher = instance["run_launcher"]
    assert launcher["class"] == "DockerRunLauncher"
    daemon_env = services["daemon"]["environment"]
    # DockerRunLauncher raises for a bare name missing from the launching process.
    missing = [name for name in launcher["config"]["env_vars"] if "=" not in name and name not in daemon_env]
    assert not missing, f"run_launcher.env_vars not set in the daemon: {missing}"
    assert launcher["config"]["network"] == config["networks"]["etl"]["name"]
    volumes_from = launcher["config"]["container_kwargs"]["volumes_from"]
    assert volumes_from == [services["user_code"]["container_name"]]
    # Runs start from the image the code server advertises.
    assert services["user_code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["user_code"]["image"]


def test_every_pipeline_variable_reaches_runs(config, instance):
    env_vars = set(instance["run_launcher"]["config"]["env_vars"])
    etl_vars = {
        name
        for name in config["services"]["user_code"]["environment"]
        if name.startswith(("ETL_", "KAGGLE_", "HUBSPOT_", "AWS_", "DAGSTER_PG_"))
    }
    assert etl_vars <= env_vars, f"not passed to run containers: {sorted(etl_vars - env_vars)}"


def test_every_variable_the_package_reads_is_configured(instance):
    """A variable the package reads is a compose secret (a file) or reaches run containers."""
    env_vars = set(instance["run_launcher"]["config"]["env_vars"])
    missing = set(settings.REGISTRY) - env_vars - SECRETS - set(NOT_PASSED)
    assert not missing, f"read by etl_assets but neither a secret nor in run_launcher.env_vars: {sorted(missing)}"
    assert not set(NOT_PASSED) & env_vars, "passed to runs after all: drop it from NOT_PASSED"


def test_every_variable_name_in_the_package_is_in_the_settings_registry():
    """A quoted variable name anywhere in etl_assets/ is a registry entry, so the test above sees it."""
    pattern = re.compile(r"""["']((?:ETL|KAGGLE|HUBSPOT|AWS|VAULT|DD)_[A-Z0-9_]+)["']""")
    quoted = {
        name
        for path in (ROOT / "etl_assets").rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }
    hubspot_constants = {"HUBSPOT_DEFINED"}  # an association category of HubSpot's API, not a variable
    assert not quoted - set(settings.REGISTRY) - hubspot_constants, "add these to etl_assets/settings.py"


def test_instance_config_is_valid_dagster_config(instance):
    from dagster._core.instance.config import dagster_instance_config

    env = {"DAGSTER_PG_USER": "u", "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_HOST": "h", "DAGSTER_PG_DB": "d"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        validated, _ = dagster_instance_config(str(DEPLOY_INSTANCE.parent))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert validated["run_monitoring"]["enabled"] is True
    assert "postgres" in validated["storage"]


def test_hubspot_syncs_run_one_at_a_time(instance):
    from etl_assets.jobs import HUBSPOT_SYNC_TAG, daily_etl

    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": HUBSPOT_SYNC_TAG, "value": "true", "limit": 1} in limits
    assert daily_etl.tags.get(HUBSPOT_SYNC_TAG) == "true"
    assert instance["concurrency"]["runs"]["max_concurrent_runs"] >= 1


def test_workspace_points_at_the_code_server(config):
    workspace = yaml.safe_load(DEPLOY_WORKSPACE.read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    assert (grpc["host"], grpc["port"]) == ("user_code", 4000)
    assert "user_code" in config["services"]


def test_test_override_swaps_in_standins_and_the_hubspot_fake():
    config = compose_config(COMPOSE, COMPOSE_TEST)
    services = config["services"]
    assert services["mysql"]["image"].startswith("etl-standin/mysql")
    assert services["postgres"]["image"].startswith("etl-standin/postgres")
    assert "hubspot" in services
    assert services["daemon"]["environment"]["HUBSPOT_API_BASE"] == "http://hubspot:8080"
    # The override adds to the base file, it does not drop what the base sets.
    assert services["daemon"]["environment"]["ETL_SECRETS_BACKEND"] == "files"
    assert "mysql" in services["user_code"]["depends_on"]


def test_env_example_values_are_the_registrys_defaults():
    """.env.example leaves a setting blank (the package's default) or shows that same default."""
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if name in settings.REGISTRY and value.strip():
            assert not settings.REGISTRY[name].secret, f"secret {name} in .env.example"
            assert value.strip() == settings.default(name), (
                f".env.example sets {name}={value}, but its default (etl_assets/settings.py) is "
                f"{settings.default(name)!r}: leave it blank or show the default"
            )
