"""SecretsResource: the env, files and aws backends, against a real local Secrets Manager.

`moto_server` (from moto[server]) runs as a subprocess on a free port and boto3 reaches it
through AWS_ENDPOINT_URL, exactly as the product reaches AWS. The fixtures here are imported by
the log and leak tests too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
import requests

from etl_assets.errors import PermanentError
from etl_assets.logs.redaction import redact
from etl_assets.resources.secrets import SecretsResource


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server():
    """The URL of a fresh moto_server (Secrets Manager, CloudWatch Logs, ...) for this module."""
    port = _free_port()
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start on port {port}")
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def aws_env(moto_server, monkeypatch, tmp_path) -> str:
    """The standard AWS variables pointed at moto, with no AWS config of the machine's user."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server


@pytest.fixture
def secretsmanager(aws_env):
    return boto3.client("secretsmanager", region_name="eu-west-1")


def _unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def assert_names_without_value(error: Exception, *parts: str, values: tuple[str, ...] = ()) -> None:
    text = str(error)
    for part in parts:
        assert part in text, text
    for value in values:
        assert value not in text, text


def configured(monkeypatch, cache_seconds: float = 60.0, **environment: str) -> SecretsResource:
    """A SecretsResource for the backend the environment names, as a deployment configures it."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return SecretsResource(cache_seconds=cache_seconds)


# env


def test_env_backend_reads_the_variable(monkeypatch):
    monkeypatch.delenv("ETL_SECRETS_BACKEND", raising=False)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "env-token-1234")
    assert SecretsResource().get("HUBSPOT_ACCESS_TOKEN") == "env-token-1234"


def test_env_backend_missing_required_secret_names_it(monkeypatch):
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "env")
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    assert SecretsResource().get("KAGGLE_KEY") is None
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("KAGGLE_KEY", required=True)
    assert_names_without_value(caught.value, "KAGGLE_KEY", "env secrets backend")


def test_unknown_backend_is_refused(monkeypatch):
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "keepass")
    with pytest.raises(PermanentError, match="ETL_SECRETS_BACKEND='keepass'"):
        SecretsResource().get("KAGGLE_KEY")


# files


def test_files_backend_reads_one_file_per_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "files")
    monkeypatch.setenv("ETL_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("ETL_DATABASE_PASSWORD", "from-the-environment")  # must not be used
    (tmp_path / "ETL_DATABASE_PASSWORD").write_text("files-pass-7c1e\n")  # as `echo` writes it
    secrets = SecretsResource()
    assert secrets.get("ETL_DATABASE_PASSWORD") == "files-pass-7c1e"
    assert redact("password files-pass-7c1e") == "password ***"  # registered for the log filter


def test_files_backend_missing_secret_names_secret_backend_and_path(monkeypatch, tmp_path):
    (tmp_path / "HUBSPOT_ACCESS_TOKEN").write_text("files-token-55aa")
    secrets = configured(monkeypatch, ETL_SECRETS_BACKEND="files", ETL_SECRETS_DIR=str(tmp_path))
    assert secrets.get("KAGGLE_KEY") is None
    with pytest.raises(PermanentError) as caught:
        secrets.get("KAGGLE_KEY", required=True)
    assert_names_without_value(
        caught.value, "KAGGLE_KEY", "files secrets backend", str(tmp_path / "KAGGLE_KEY"), values=("files-token-55aa",)
    )


def test_files_backend_defaults_to_run_secrets(monkeypatch):
    monkeypatch.delenv("ETL_SECRETS_DIR", raising=False)
    with pytest.raises(PermanentError, match="/run/secrets/NO_SUCH_SECRET_XYZ"):
        configured(monkeypatch, ETL_SECRETS_BACKEND="files").get("NO_SUCH_SECRET_XYZ", required=True)


# aws


def test_aws_json_secret_holds_every_key(secretsmanager, monkeypatch):
    secret_id = _unique("etl_assets/prod")
    secretsmanager.create_secret(
        Name=secret_id,
        SecretString=json.dumps({"HUBSPOT_ACCESS_TOKEN": "aws-token-0001", "KAGGLE_KEY": "aws-kaggle-0001"}),
    )
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "aws")
    monkeypatch.setenv("ETL_AWS_SECRET_ID", secret_id)
    secrets = SecretsResource()
    assert secrets.get("HUBSPOT_ACCESS_TOKEN") == "aws-token-0001"
    assert secrets.get("KAGGLE_KEY") == "aws-kaggle-0001"
    assert secrets.get("KAGGLE_API_TOKEN") is None
    with pytest.raises(PermanentError) as caught:
        secrets.get("ETL_DATABASE_PASSWORD", required=True)
    assert_names_without_value(
        caught.value,
        "ETL_DATABASE_PASSWORD",
        "aws secrets backend",
        secret_id,
        values=("aws-token-0001", "aws-kaggle-0001"),
    )
    # Every value of the JSON secret is masked in logs from now on, used or not.
    assert redact("aws-kaggle-0001 aws-token-0001") == "*** ***"


def test_aws_one_secret_per_key_with_prefix(secretsmanager, monkeypatch):
    prefix = _unique("etl_assets") + "/"
    secretsmanager.create_secret(Name=prefix + "HUBSPOT_ACCESS_TOKEN", SecretString="aws-token-per-key\n")
    secrets = configured(monkeypatch, ETL_SECRETS_BACKEND="aws", ETL_AWS_SECRET_PREFIX=prefix)
    assert secrets.get("HUBSPOT_ACCESS_TOKEN") == "aws-token-per-key"
    with pytest.raises(PermanentError) as caught:
        secrets.get("KAGGLE_KEY", required=True)
    assert_names_without_value(
        caught.value, "KAGGLE_KEY", "aws secrets backend", prefix + "KAGGLE_KEY", values=("aws-token-per-key",)
    )


def test_aws_rotation_reaches_a_fresh_resource_and_an_expired_cache(secretsmanager, monkeypatch):
    secret_id = _unique("etl_assets/rotating")
    secretsmanager.create_secret(Name=secret_id, SecretString=json.dumps({"HUBSPOT_ACCESS_TOKEN": "before-rotation"}))
    cached = configured(monkeypatch, cache_seconds=3600, ETL_SECRETS_BACKEND="aws", ETL_AWS_SECRET_ID=secret_id)
    expiring = SecretsResource(cache_seconds=0.2)
    assert cached.get("HUBSPOT_ACCESS_TOKEN") == expiring.get("HUBSPOT_ACCESS_TOKEN") == "before-rotation"

    rotated = json.dumps({"HUBSPOT_ACCESS_TOKEN": "after-rotation"})
    secretsmanager.put_secret_value(SecretId=secret_id, SecretString=rotated)

    assert cached.get("HUBSPOT_ACCESS_TOKEN") == "before-rotation"  # within its cache window
    time.sleep(0.3)
    assert expiring.get("HUBSPOT_ACCESS_TOKEN") == "after-rotation"
    fresh = SecretsResource(cache_seconds=3600)
    assert fresh.get("HUBSPOT_ACCESS_TOKEN") == "after-rotation"


@pytest.mark.parametrize("backend", ["env", "files", "aws"])
def test_fresh_read_skips_the_cache_refills_it_and_registers_the_value(backend, request, monkeypatch, tmp_path):
    """What a 401 mid-sync does: read the token again past a cache that still holds the old one."""
    if backend == "env":
        secrets = configured(monkeypatch, cache_seconds=3600, ETL_SECRETS_BACKEND="env")
        store = lambda value: monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", value)  # noqa: E731
    elif backend == "files":
        secrets = configured(
            monkeypatch, cache_seconds=3600, ETL_SECRETS_BACKEND="files", ETL_SECRETS_DIR=str(tmp_path)
        )
        store = (tmp_path / "HUBSPOT_ACCESS_TOKEN").write_text
    else:
        client, secret_id = request.getfixturevalue("secretsmanager"), _unique("etl_assets/fresh")
        client.create_secret(Name=secret_id, SecretString="{}")
        secrets = configured(monkeypatch, cache_seconds=3600, ETL_SECRETS_BACKEND="aws", ETL_AWS_SECRET_ID=secret_id)
        store = lambda value: client.put_secret_value(  # noqa: E731
            SecretId=secret_id, SecretString=json.dumps({"HUBSPOT_ACCESS_TOKEN": value})
        )
    store(f"{backend}-before-rotation")
    assert secrets.get("HUBSPOT_ACCESS_TOKEN") == f"{backend}-before-rotation"
    store(f"{backend}-after-rotation-9f3d")

    assert secrets.get("HUBSPOT_ACCESS_TOKEN") == f"{backend}-before-rotation"  # cached for an hour
    assert secrets.get("HUBSPOT_ACCESS_TOKEN", fresh=True) == f"{backend}-after-rotation-9f3d"
    assert secrets.get("HUBSPOT_ACCESS_TOKEN") == f"{backend}-after-rotation-9f3d"  # the cache holds the new one
    assert redact(f"token {backend}-after-rotation-9f3d") == "token ***"


def tokens_of_two_runs(rotate) -> list[str]:
    """HUBSPOT_ACCESS_TOKEN as two runs of one Definitions read it, `rotate` called between them:
    as in a long-lived code server, with a cache far longer than the gap."""
    seen = []

    @dg.asset
    def token_probe(secrets: SecretsResource) -> None:
        seen.append(secrets.get("HUBSPOT_ACCESS_TOKEN"))

    resources = {"secrets": SecretsResource(cache_seconds=3600)}
    assert dg.materialize([token_probe], resources=resources).success
    rotate()
    assert dg.materialize([token_probe], resources=resources).success
    return seen


def test_aws_rotation_reaches_the_next_run_of_the_same_definitions(secretsmanager, monkeypatch):
    """As in a long-lived code server: one Definitions object, two runs, a rotation in between."""
    secret_id = _unique("etl_assets/runs")
    secretsmanager.create_secret(Name=secret_id, SecretString=json.dumps({"HUBSPOT_ACCESS_TOKEN": "run-1-token"}))
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "aws")
    monkeypatch.setenv("ETL_AWS_SECRET_ID", secret_id)
    rotated = json.dumps({"HUBSPOT_ACCESS_TOKEN": "run-2-token"})
    assert tokens_of_two_runs(lambda: secretsmanager.put_secret_value(SecretId=secret_id, SecretString=rotated)) == [
        "run-1-token",
        "run-2-token",
    ]


def test_aws_secret_that_is_not_json_fails_without_quoting_it(secretsmanager, monkeypatch):
    secret_id = _unique("etl_assets/broken")
    secretsmanager.create_secret(Name=secret_id, SecretString="plain-text-secret-value")
    with pytest.raises(PermanentError) as caught:
        configured(monkeypatch, ETL_SECRETS_BACKEND="aws", ETL_AWS_SECRET_ID=secret_id).get("KAGGLE_KEY")
    assert_names_without_value(
        caught.value, secret_id, "aws secrets backend", "not a JSON object", values=("plain-text-secret-value",)
    )


def test_aws_missing_json_secret_names_it(aws_env, monkeypatch):
    secrets = configured(monkeypatch, ETL_SECRETS_BACKEND="aws", ETL_AWS_SECRET_ID="etl_assets/absent")
    with pytest.raises(PermanentError) as caught:
        secrets.get("KAGGLE_KEY", required=True)
    assert_names_without_value(caught.value, "KAGGLE_KEY", "aws secrets backend", "etl_assets/absent")


def test_aws_unreachable_endpoint_is_transient_and_names_the_secret(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens: unreachable
    from etl_assets.errors import TransientError

    secrets = configured(monkeypatch, ETL_SECRETS_BACKEND="aws", ETL_AWS_SECRET_ID="etl_assets/prod")
    with pytest.raises(TransientError, match="etl_assets/prod.*aws secrets backend.*unreachable"):
        secrets.get("KAGGLE_KEY")
