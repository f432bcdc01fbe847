"""HubSpot: the private app token, the API base, and the limits one sync keeps to."""

import logging
from typing import Optional

import dagster as dg
from pydantic import Field

from etl_assets import settings
from etl_assets.hubspot.client import HubSpotApi
from etl_assets.hubspot.ratelimit import RollingWindowLimiter
from etl_assets.resources.secrets import SECRET_FIELD, SecretsResource


class HubSpotResource(dg.ConfigurableResource):
    """Without a token the sync is a dry run: it writes the batches it would send to an outbox."""

    access_token: Optional[str] = Field(default=None, repr=False, json_schema_extra=SECRET_FIELD)  # else secret HUBSPOT_ACCESS_TOKEN
    api_base: Optional[str] = None  # else HUBSPOT_API_BASE, else https://api.hubapi.com
    rate_limit: Optional[int] = None  # requests per 10 s window; else HUBSPOT_RATE_LIMIT, else 100
    rate_interval_ms: int = 10_000
    max_in_flight: Optional[int] = None  # concurrent batch requests; else HUBSPOT_MAX_IN_FLIGHT, else 4
    create_missing_properties: Optional[bool] = None  # else HUBSPOT_CREATE_PROPERTIES, else true
    secrets: dg.ResourceDependency[SecretsResource]

    def token(self) -> str | None:
        return self.access_token or self.secrets.get(settings.HUBSPOT_ACCESS_TOKEN)

    def base_url(self) -> str:
        return (self.api_base or settings.setting(settings.HUBSPOT_API_BASE) or "").rstrip("/")

    def in_flight(self) -> int:
        return max(1, self.max_in_flight or settings.int_setting(settings.HUBSPOT_MAX_IN_FLIGHT))

    def may_create_properties(self) -> bool:
        if self.create_missing_properties is not None:
            return self.create_missing_properties
        return settings.bool_setting(settings.HUBSPOT_CREATE_PROPERTIES)

    def open_api(self, log: logging.Logger) -> HubSpotApi:
        token = self.token()
        if not token:
            raise ValueError("open_api needs a token; check token() first")
        limiter = RollingWindowLimiter(
            max_requests=self.rate_limit or settings.int_setting(settings.HUBSPOT_RATE_LIMIT),
            interval_s=self.rate_interval_ms / 1000,
        )
        return HubSpotApi(token, self.base_url(), limiter, settings.retry_settings(), log)
