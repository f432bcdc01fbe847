"""Reading HubSpot's error answers: category, message, and which inputs a 400 blames."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from etl_assets.errors import PermanentError
from etl_assets.logs.redaction import redact

DATA_ERROR_STATUSES = {400, 409}  # the batch's content is at fault, not the transport
# Codes that refuse a property whatever the contact: no split of the batch can get one through.
# READ_ONLY_VALUE is the name the issue gives; HubSpot's real code for it is unverified.
PROPERTY_CODES = {"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"}
# Codes about each contact's own value, even when every contact of a batch has one.
RECORD_CODES = {"INVALID_EMAIL"}


@dataclass(frozen=True)
class HubSpotError:
    status: int
    category: str
    message: str
    policy: str | None = None  # rate-limit policy of a 429
    missing_scopes: tuple[str, ...] = ()  # of a 403 MISSING_SCOPES
    problems: tuple[tuple[str, str], ...] = ()  # (property, code) per `errors[]` item; property "" if none
    ids: tuple[str, ...] = ()  # the inputs a whole-batch answer names in `context.ids` (e.g. OBJECT_NOT_FOUND)

    @property
    def is_data_error(self) -> bool:
        return self.status in DATA_ERROR_STATUSES

    @property
    def is_auth_error(self) -> bool:
        return self.status in (401, 403)

    def summary(self) -> str:
        return f"{self.status} {self.category}: {self.message}"


class HubSpotApiError(Exception):
    """A HubSpot error answer, parsed. `etl_assets.errors.classify` judges it by status: 5xx
    transient (retried), 4xx permanent (the client has already re-read the token after a 401)."""

    def __init__(self, error: HubSpotError):
        super().__init__(error.summary())
        self.error = error


class PropertyRefused(PermanentError):
    """A mapped property refused whatever the contact (unknown, read-only, or no value fits its type):
    the column map or the account is wrong, or the definitions the sync used are out of date."""


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
    message = (
        redact(str(document["message"]))
        if document.get("message")
        else f"no JSON error message ({len(body or '')} bytes)"
    )
    return HubSpotError(
        status=status,
        category=str(category),
        message=message,
        policy=document.get("policyName"),
        missing_scopes=_required_scopes(document),
        problems=_problems(document),
        ids=_context_ids(document),
    )


def _context_ids(document: dict) -> tuple[str, ...]:
    context = document.get("context")
    ids = context.get("ids") if isinstance(context, dict) else None
    return tuple(str(item) for item in ids) if isinstance(ids, list) else ()


_EXISTING_ID = re.compile(r"Existing ID: (\d+)")


def existing_id(message: str) -> str | None:
    """The id a CONFLICT names: HubSpot's "Contact already exists. Existing ID: 123" (hubspot-api-python#51)."""
    match = _EXISTING_ID.search(message or "")
    return match.group(1) if match else None


def _error_items(document: dict) -> Iterator[tuple[dict, dict]]:
    """Each `errors[]` item of an answer with its `context` ({} when it has none)."""
    for item in document.get("errors") or []:
        if isinstance(item, dict):
            context = item.get("context")
            yield item, context if isinstance(context, dict) else {}


def _required_scopes(document: dict) -> tuple[str, ...]:
    """The scopes a MISSING_SCOPES answer names (`requiredGranularScopes`, older bodies `requiredScopes`)."""
    scopes: list[str] = []
    for _item, context in _error_items(document):
        for key in ("requiredGranularScopes", "requiredScopes"):
            scopes += [str(scope) for scope in context.get(key) or []]
    return tuple(dict.fromkeys(scopes))


def _problems(document: dict) -> tuple[tuple[str, str], ...]:
    """(property, code) of each `errors[]` item of a 400 (`context.propertyName`, a list)."""
    return tuple(
        (str(name), str(item.get("code") or ""))
        for item, context in _error_items(document)
        for name in context.get("propertyName") or [""]
    )


def refused_property(error: HubSpotError, inputs: int) -> tuple[str, str] | None:
    """(property, code) when a 400 to a batch of `inputs` refuses a property rather than records.

    That is: an item says the property does not exist or cannot be set, or one property fails with
    the same code once per input (a wrong type for every contact). Splitting the batch cannot help
    then, every half fails alike. If HubSpot names a property once per batch rather than once per
    input (unverified), a wrong type is not recognised here and is isolated, within the cap.
    """
    named = [(name, code) for name, code in error.problems if name and code not in RECORD_CODES]
    for name, code in named:
        if code in PROPERTY_CODES:
            return name, code
    if named and inputs > 1:
        most, times = collections.Counter(named).most_common(1)[0]
        if times >= inputs:
            return most
    return None


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
