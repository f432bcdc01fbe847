"""Where credentials come from: environment, secret files, or AWS Secrets Manager.

`ETL_SECRETS_BACKEND` picks the backend when a run starts. Values are fetched on use and
cached for a short time, so a rotated secret reaches the next run without a restart.
"""

import json
import os
import time
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from etl_assets.errors import PermanentError

BACKEND_VARIABLE = "ETL_SECRETS_BACKEND"
BACKENDS = ("env", "files", "aws")
DEFAULT_SECRETS_DIR = "/run/secrets"


class SecretsResource(dg.ConfigurableResource):
    """Reads named secrets (e.g. HUBSPOT_ACCESS_TOKEN) from the configured backend."""

    backend: Optional[str] = None  # falls back to ETL_SECRETS_BACKEND, then "env"
    secrets_dir: Optional[str] = None  # files backend; falls back to ETL_SECRETS_DIR, then /run/secrets
    aws_secret_id: Optional[str] = None  # aws backend; falls back to ETL_AWS_SECRET_ID
    cache_seconds: float = 60.0

    _cache: dict = PrivateAttr(default_factory=dict)

    def resolved_backend(self) -> str:
        backend = (self.backend or dg.EnvVar(BACKEND_VARIABLE).get_value() or "env").strip().lower()
        if backend not in BACKENDS:
            raise PermanentError(f"{BACKEND_VARIABLE}={backend!r} is not one of {BACKENDS}")
        return backend

    def get(self, name: str, required: bool = False) -> str | None:
        """The secret's value, or None when absent and not `required`."""
        backend = self.resolved_backend()
        cached = self._cache.get((backend, name))
        if cached and time.monotonic() - cached[1] < self.cache_seconds:
            value = cached[0]
        else:
            value = self._fetch(backend, name)
            self._cache[(backend, name)] = (value, time.monotonic())
        if value is None and required:
            raise PermanentError(f"secret {name} is missing from the {backend} secrets backend{self._where(backend)}")
        return value

    def _where(self, backend: str) -> str:
        if backend == "files":
            return f" (no file {self._secrets_dir() / '<name>'})"
        if backend == "aws":
            return f" (secret id {self._aws_secret_id() or '<one secret per key>'})"
        return ""

    def _fetch(self, backend: str, name: str) -> str | None:
        if backend == "env":
            value = dg.EnvVar(name).get_value()
        elif backend == "files":
            value = self._read_file(name)
        else:
            value = self._read_aws(name)
        return value if value else None

    def _secrets_dir(self) -> Path:
        return Path(self.secrets_dir or dg.EnvVar("ETL_SECRETS_DIR").get_value() or DEFAULT_SECRETS_DIR)

    def _read_file(self, name: str) -> str | None:
        path = self._secrets_dir() / name
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"secret {name}: cannot read {path}: {exc.strerror}") from None

    def _aws_secret_id(self) -> str | None:
        return self.aws_secret_id or dg.EnvVar("ETL_AWS_SECRET_ID").get_value()

    def _read_aws(self, name: str) -> str | None:
        from botocore.exceptions import ClientError  # the AWS SDK loads only for this backend

        from dagster_aws.secretsmanager import SecretsManagerResource

        # Region, endpoint (AWS_ENDPOINT_URL) and credentials come from the standard AWS chain.
        client = SecretsManagerResource(region_name=os.environ.get("AWS_REGION") or os.environ.get(
            "AWS_DEFAULT_REGION")).get_client()
        bundle_id = self._aws_secret_id()
        try:
            if bundle_id:
                document = json.loads(client.get_secret_value(SecretId=bundle_id)["SecretString"])
                value = document.get(name)
                return None if value is None else str(value)
            return client.get_secret_value(SecretId=name)["SecretString"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise PermanentError(f"secret {name}: AWS Secrets Manager answered {code}") from None
        except json.JSONDecodeError:
            raise PermanentError(f"AWS secret {bundle_id} is not a JSON object of name/value pairs") from None
