"""HubSpot: the private app token, the API base, the limits one sync keeps to, and the sync's mode."""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot.client import HubSpotApi
from etl_assets.hubspot.ratelimit import RollingWindowLimiter, shared_window_path
from etl_assets.resources.secrets import BACKEND_VARIABLE, SecretsResource

LIVE = "live"
DRY_RUN = "dry run"
NOTHING_CONFIGURED = f"nothing configured: no {settings.HUBSPOT_ACCESS_TOKEN} and no HUBSPOT_* setting"


@dataclass(frozen=True)
class SyncMode:
    """Whether a sync sends to HubSpot or writes the batches it would send to an outbox, and why."""

    name: str  # LIVE or DRY_RUN
    reason: str

    @property
    def live(self) -> bool:
        return self.name == LIVE

    def metadata(self) -> dict[str, str]:
        return {"mode": self.name, "mode_reason": self.reason}


def sync_mode(dry_run: bool, secrets: SecretsResource, environ: Mapping[str, str]) -> SyncMode:
    """Live with a token; a dry run when asked for, or when nothing at all is configured.

    Once a secrets backend is chosen or any HUBSPOT_* variable is set, a missing token is a
    mistake (a misspelled secret name, a missing file), not a request for a dry run: it fails.
    """
    if dry_run:  # the token is not read
        return SyncMode(DRY_RUN, f"{settings.HUBSPOT_DRY_RUN}=true")
    backend = secrets.resolved_backend()
    expected_because = [f"{BACKEND_VARIABLE}={backend}"] if backend != "env" else []
    expected_because += sorted(
        f"{name} is set" for name, value in environ.items() if name.startswith("HUBSPOT_") and value.strip()
    )
    try:
        token = secrets.get(settings.HUBSPOT_ACCESS_TOKEN, required=bool(expected_because))
    except PermanentError as exc:
        raise PermanentError(
            f"{exc}; a token is expected because {', '.join(expected_because)} "
            f"({settings.HUBSPOT_DRY_RUN}=true runs dry without one)"
        ) from None
    if token:
        return SyncMode(LIVE, f"token from the {backend} secrets backend")
    return SyncMode(DRY_RUN, NOTHING_CONFIGURED)


class HubSpotResource(dg.ConfigurableResource):
    """See `sync_mode` for when the sync is a dry run, writing the batches it would send to an outbox.

    The token (secret HUBSPOT_ACCESS_TOKEN) and the API base (HUBSPOT_API_BASE) are not fields:
    run config launched from the UI could otherwise send the token to a server of its choosing.
    """

    # Unset (None), each falls back to its setting (defaults in etl_assets/settings.py).
    rate_limit: int | None = None  # requests per 10 s window; else HUBSPOT_RATE_LIMIT
    rate_interval_ms: int = 10_000
    max_in_flight: int | None = None  # concurrent batch requests; else HUBSPOT_MAX_IN_FLIGHT
    create_missing_properties: bool | None = None  # else HUBSPOT_CREATE_PROPERTIES
    secrets: dg.ResourceDependency[SecretsResource]

    def mode(self) -> SyncMode:
        return sync_mode(settings.bool_setting(settings.HUBSPOT_DRY_RUN), self.secrets, os.environ)

    def token(self) -> str | None:
        return self.secrets.get(settings.HUBSPOT_ACCESS_TOKEN)

    def base_url(self) -> str:
        return (settings.setting(settings.HUBSPOT_API_BASE) or "").rstrip("/")

    def in_flight(self) -> int:
        return max(1, self.max_in_flight or settings.int_setting(settings.HUBSPOT_MAX_IN_FLIGHT))

    def may_create_properties(self) -> bool:
        if self.create_missing_properties is not None:
            return self.create_missing_properties
        return settings.bool_setting(settings.HUBSPOT_CREATE_PROPERTIES)

    def open_api(self, log: logging.Logger) -> HubSpotApi:
        token = self.token()
        if not token:
            raise ValueError("open_api needs a token; check mode() first")
        limiter = RollingWindowLimiter(
            max_requests=self.rate_limit or settings.int_setting(settings.HUBSPOT_RATE_LIMIT),
            interval_s=self.rate_interval_ms / 1000,
        )
        limiter.persist_to(shared_window_path())  # one window with the other HubSpot steps of the account
        # A token rotated mid-sync reaches the sync through a read past the secrets cache.
        return HubSpotApi(
            token,
            self.base_url(),
            limiter,
            settings.retry_settings(),
            log,
            reread_token=lambda: self.secrets.get(settings.HUBSPOT_ACCESS_TOKEN, fresh=True),
            connections=self.in_flight(),
        )
