"""Where credentials come from: environment, secret files, or AWS Secrets Manager.

`ETL_SECRETS_BACKEND` picks the backend when a run starts. Values are fetched on use and
cached for a short time, so a rotated secret reaches the next run without a restart. Every
value read is registered with the log redaction filter, and no error message carries one.
"""

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import dagster as dg
from pydantic import PrivateAttr

from etl_assets.errors import PermanentError, TransientError
from etl_assets.logs.redaction import register_secret

BACKEND_VARIABLE = "ETL_SECRETS_BACKEND"
BACKENDS = ("env", "files", "aws")
DEFAULT_SECRETS_DIR = "/run/secrets"


class SecretsResource(dg.ConfigurableResource):
    """Reads named secrets (e.g. HUBSPOT_ACCESS_TOKEN) from the configured backend."""

    # Where secrets come from is the deployment's choice alone (ETL_SECRETS_BACKEND, ETL_SECRETS_DIR,
    # ETL_AWS_SECRET_ID, ETL_AWS_SECRET_PREFIX): no field, so run config cannot redirect it.
    cache_seconds: float = 60.0

    # (backend, source) -> (value, fetched at); private, so never in repr, config or the UI
    _cache: dict = PrivateAttr(default_factory=dict)
    _aws_client: Any = PrivateAttr(default=None)

    def resolved_backend(self) -> str:
        backend = (dg.EnvVar(BACKEND_VARIABLE).get_value() or "env").strip().lower()
        if backend not in BACKENDS:
            raise PermanentError(f"{BACKEND_VARIABLE}={backend!r} is not one of {BACKENDS}")
        return backend

    def get(self, name: str, required: bool = False, fresh: bool = False) -> str | None:
        """The secret's value, or None when absent and not `required`.

        `fresh` skips the cache (and refills it): for a value just rejected, e.g. a rotated token.
        """
        backend = self.resolved_backend()
        if backend == "env":
            value = self._cached(("env", name), lambda: dg.EnvVar(name).get_value(), fresh)
        elif backend == "files":
            value = self._cached(("files", name), lambda: self._read_file(name), fresh)
        else:
            value = self._read_aws(name, fresh)
        value = value or None  # an empty secret counts as missing
        if value is None and required:
            raise PermanentError(f"secret {name} is missing from the {backend} secrets backend"
                                 f" ({self._where(backend, name)})")
        return value

    def _cached(self, key: tuple, fetch: Callable[[], Any], fresh: bool) -> Any:
        hit = self._cache.get(key)
        if hit and not fresh and time.monotonic() - hit[1] < self.cache_seconds:
            return hit[0]
        value = fetch()
        for secret in value.values() if isinstance(value, dict) else [value]:
            if isinstance(secret, str):
                register_secret(secret)
        self._cache[key] = (value, time.monotonic())
        return value

    def _where(self, backend: str, name: str) -> str:
        if backend == "files":
            return f"no file {self._secrets_dir() / name}"
        if backend == "aws":
            bundle_id = self._aws_secret_id()
            if bundle_id:
                return f"no key {name} in AWS secret {bundle_id!r}"
            return f"no AWS secret {self._aws_prefix() + name!r}"
        return f"environment variable {name} is unset or empty"

    # files: one file per secret, the Docker/Compose secrets convention

    def _secrets_dir(self) -> Path:
        return Path(dg.EnvVar("ETL_SECRETS_DIR").get_value() or DEFAULT_SECRETS_DIR)

    def _read_file(self, name: str) -> str | None:
        path = self._secrets_dir() / name
        try:
            return path.read_text(encoding="utf-8").strip()  # editors and `echo` add a trailing newline
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"secret {name} (files secrets backend): cannot read {path}: {exc.strerror}"
                                 ) from None

    # aws: AWS Secrets Manager, one JSON secret holding every key, or one secret per key

    def _aws_secret_id(self) -> str | None:
        return dg.EnvVar("ETL_AWS_SECRET_ID").get_value() or None

    def _aws_prefix(self) -> str:
        return dg.EnvVar("ETL_AWS_SECRET_PREFIX").get_value() or ""

    def _read_aws(self, name: str, fresh: bool) -> str | None:
        bundle_id = self._aws_secret_id()
        if bundle_id:
            document = self._cached(("aws", bundle_id), lambda: self._aws_bundle(bundle_id), fresh)
            value = document.get(name)
            return None if value is None else str(value)
        secret_id = self._aws_prefix() + name

        def fetch() -> str | None:
            text = self._aws_secret_string(secret_id)
            return None if text is None else text.strip()  # `--secret-string file://x` keeps the newline

        return self._cached(("aws", secret_id), fetch, fresh)

    def _aws_bundle(self, secret_id: str) -> dict:
        text = self._aws_secret_string(secret_id)
        if text is None:
            return {}
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None
        if not isinstance(document, dict):  # the error names the secret, never quotes its text
            raise PermanentError(f"AWS secret {secret_id!r} (aws secrets backend) is not a JSON object of "
                                 "name/value pairs")
        return document

    def _client(self):
        if self._aws_client is None:
            # boto3 itself, not dagster-aws's SecretsManagerResource: that is beta and warns on
            # stderr in every step. Endpoint (AWS_ENDPOINT_URL) and credentials come from the
            # standard AWS chain; botocore reads only AWS_DEFAULT_REGION, so AWS_REGION is passed on.
            import boto3  # the AWS SDK loads only for this backend
            from botocore.config import Config

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            self._aws_client = boto3.client("secretsmanager", region_name=region,
                                            config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._aws_client

    def _aws_secret_string(self, secret_id: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError

        where = f"AWS secret {secret_id!r} (aws secrets backend)"
        try:
            response = self._client().get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise PermanentError(f"{where}: AWS Secrets Manager answered {code}") from None
        except BotoConnectionError as exc:
            raise TransientError(f"{where}: AWS Secrets Manager unreachable ({type(exc).__name__})") from None
        except BotoCoreError as exc:  # no credentials or region, bad endpoint...: configuration, not chance
            raise PermanentError(f"{where}: {exc}") from None
        if "SecretString" not in response:
            raise PermanentError(f"{where} holds binary data; store the value as a string")
        return response["SecretString"]
