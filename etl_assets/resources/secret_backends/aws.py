"""ETL_SECRETS_BACKEND=aws: AWS Secrets Manager, one JSON secret holding every key, or one secret per key."""

from __future__ import annotations

from typing import Any

from etl_assets import settings
from etl_assets.errors import PermanentError, reworded
from etl_assets.resources.secret_backends import Content, parse_bundle


class AwsSecrets:
    def __init__(self) -> None:
        self.bundle_id = settings.setting(settings.AWS_SECRET_ID)
        self.prefix = settings.setting(settings.AWS_SECRET_PREFIX) or ""
        self._client: Any = None

    def source(self, name: str) -> str:
        return self.bundle_id or self.prefix + name

    def where(self, name: str) -> str:
        if self.bundle_id:
            return f"no key {name} in AWS secret {self.bundle_id!r}"
        return f"no AWS secret {self.prefix + name!r}"

    def fetch(self, source: str) -> Content:
        text = self._secret_string(source)
        if self.bundle_id:
            # A missing JSON secret reads as empty: each required key then fails naming it.
            return {} if text is None else parse_bundle(text, f"AWS secret {source!r} (aws secrets backend)")
        return None if text is None else text.strip()  # `--secret-string file://x` keeps the newline

    def client(self):
        if self._client is None:
            # boto3 itself, not dagster-aws's SecretsManagerResource: that is beta and warns on
            # stderr in every step. Endpoint (AWS_ENDPOINT_URL) and credentials come from the
            # standard AWS chain; botocore reads only AWS_DEFAULT_REGION, so AWS_REGION is passed on.
            import boto3  # the AWS SDK loads only for this backend
            from botocore.config import Config

            region = settings.aws_region()
            self._client = boto3.client(
                "secretsmanager", region_name=region, config=Config(retries={"max_attempts": 5, "mode": "standard"})
            )
        return self._client

    def _secret_string(self, secret_id: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = f"AWS secret {secret_id!r} (aws secrets backend)"
        try:
            response = self.client().get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            # transient or permanent as errors.classify says: throttling and 5xx transient, other 4xx permanent
            raise reworded(exc, f"{where}: AWS Secrets Manager answered {code}") from None
        except BotoConnectionError as exc:  # transient
            raise reworded(exc, f"{where}: AWS Secrets Manager unreachable ({type(exc).__name__})") from None
        except BotoCoreError as exc:  # no credentials or region, bad endpoint...: configuration, permanent
            raise reworded(exc, f"{where}: {exc}") from None
        if "SecretString" not in response:
            raise PermanentError(f"{where} holds binary data; store the value as a string")
        return response["SecretString"]
