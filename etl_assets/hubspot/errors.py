"""Reading HubSpot's error answers: category, message, and which inputs a 400 blames."""

from __future__ import annotations

import json
from dataclasses import dataclass

from etl_assets.logs.redaction import redact

DATA_ERROR_STATUSES = {400, 409}  # the batch's content is at fault, not the transport


@dataclass(frozen=True)
class HubSpotError:
    status: int
    category: str
    message: str
    policy: str | None = None  # rate-limit policy of a 429
    missing_scopes: tuple[str, ...] = ()  # of a 403 MISSING_SCOPES

    @property
    def is_data_error(self) -> bool:
        return self.status in DATA_ERROR_STATUSES

    @property
    def is_auth_error(self) -> bool:
        return self.status in (401, 403)

    def summary(self) -> str:
        return f"{self.status} {self.category}: {self.message}"


class HubSpotApiError(Exception):
    """A non-retryable HubSpot answer, parsed."""

    def __init__(self, error: HubSpotError):
        super().__init__(error.summary())
        self.error = error


def parse_error(status: int, body: str | bytes | None) -> HubSpotError:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        document = json.loads(body or "{}")
    except json.JSONDecodeError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    category = document.get("category") or document.get("errorType") or f"HTTP_{status}"
    # HubSpot's own message, masked; never the body, which may echo a token or contact data (or
    # be an HTML page from the edge). Said by status and category, an answer is still clear.
    message = (redact(str(document["message"])) if document.get("message")
               else f"no JSON error message ({len(body or '')} bytes)")
    return HubSpotError(status=status, category=str(category), message=message, policy=document.get("policyName"),
                        missing_scopes=_required_scopes(document))


def _required_scopes(document: dict) -> tuple[str, ...]:
    """The scopes a MISSING_SCOPES answer names (`requiredGranularScopes`, older bodies `requiredScopes`)."""
    scopes: list[str] = []
    for item in document.get("errors") or []:
        context = item.get("context") if isinstance(item, dict) else None
        if isinstance(context, dict):
            for key in ("requiredGranularScopes", "requiredScopes"):
                scopes += [str(scope) for scope in context.get(key) or []]
    return tuple(dict.fromkeys(scopes))


def retry_after_seconds(headers) -> float | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except ValueError:
                return None
    return None
