"""A local HubSpot CRM v3 API for tests.

No machine here reaches api.hubapi.com, so the pipeline's HubSpot code is tested against this
server through the *real* ``hubspot-api-client`` (``HubSpot(access_token=T, host=server.url)``).
Behaviour follows what is known of the real API (sources named next to each rule) and the response
models of hubspot-api-client 12.0.0; where nothing is known, the fake copies HubSpot's public
wording and, when it has to choose, the *stricter* behaviour, marked "unverified".

Modelled:

* ``POST /crm/v3/objects/contacts/batch/upsert`` (``idProperty: "email"``): at most 100 inputs,
  no duplicate ids, and one bad value fails the *whole* batch with 400 ``VALIDATION_ERROR`` whose
  message embeds the list of problems, one ``errors[]`` item per problem per input (see
  "Values" below). Success is 200 with ``new`` telling created from updated.
* ``POST /crm/v3/objects/contacts/batch/create``: 201; inputs carrying ``objectWriteTraceId`` fail
  one by one (207 with ``numErrors``/``errors``), others fail the batch (400, or 409 ``CONFLICT``
  for an email that already exists, as a primary or a secondary email).
* ``POST /crm/v3/objects/contacts/batch/read`` (by id, or ``idProperty: "email"`` matching primary
  and secondary emails): 200, or 207 whose ``OBJECT_NOT_FOUND`` error names the ids no contact has
  (its wording is HubSpot's as seen in client reports; the 207 shape is unverified). Results hold
  the asked ``properties`` plus ``hs_object_id``, ``createdate`` and ``lastmodifieddate``.
* ``POST /crm/v3/objects/contacts/batch/update`` by id: 200. An id no live contact has (unknown,
  archived, merged away) fails the *whole* batch, 404 ``OBJECT_NOT_FOUND`` naming the ids in
  ``context.ids``, nothing written (unverified: stricter than a 207; HubSpot may follow merged ids).
  Changing a contact's primary email is not modelled (400).
* ``POST /crm/v3/objects/contacts/batch/archive`` by id: 204, no body; the contacts leave the store
  (``archived_contacts`` keeps them, as HubSpot's recycle bin does); their emails are free again.
  An unknown or already archived id fails the whole batch like update (unverified, stricter).
* Every batch endpoint: at most 100 inputs and no duplicate ids (400 ``VALIDATION_ERROR``).
* Results of upsert and create come back in a shuffled order (HubSpot does not promise input order), and each
  result's ``properties`` hold only what the input sent plus ``email``, ``hs_object_id``,
  ``createdate`` and ``lastmodifieddate`` (unverified: stricter than echoing every property).
* Values (HubSpot stores and receives every value as a string; ``""`` clears a value and passes
  every type check). Per property ``type``:

  - ``date``: ``YYYY-MM-DD`` (a real calendar date) or epoch *milliseconds* at midnight UTC, else
    ``INVALID_DATE``; a non-midnight epoch reads like HubSpot's real
    ``1579179660000 is at 13:1:0.0 UTC, not midnight!`` (the wording for other strings is unverified).
  - ``datetime``: ISO 8601 with a zone designator (``Z`` or ``±hh:mm``) or epoch ms, else
    ``INVALID_DATETIME`` (the code name is unverified; a value without a zone is refused, stricter).
  - ``number``: optional minus, digits, at most one period, no commas or spaces (HubSpot's
    validation since 2023-05-22), else ``INVALID_LONG`` ``"<v> was not a valid long."``.
  - ``bool``: exactly ``true`` or ``false``, else ``INVALID_BOOLEAN`` (code unverified).
  - ``enumeration``: an option's *value* (not its label), exactly; a ``checkbox`` property takes a
    ``;``-separated list of option values, any other field type exactly one; else
    ``INVALID_OPTION`` with HubSpot's real message shape. ``externalOptions`` properties (stages,
    owners) list no options and accept anything.
  - read-only or calculated properties → ``READ_ONLY_VALUE``; unknown ones →
    ``PROPERTY_DOESNT_EXIST`` (both whatever the value); invalid emails → ``INVALID_EMAIL``.
* Secondary emails (read-only ``hs_additional_emails``, a ``;`` list) and merged contacts
  (``hs_merged_object_ids``): HubSpot says secondary emails look contacts up like primary ones.
  Here an upsert whose ``id`` is a secondary (or merged-away) email updates the owning contact,
  keeps its primary email and answers with the owner's id (unverified), and two ids of one batch
  that name the same contact are duplicates (unverified).
* 207 multi-status upserts (``upsert_errors``): the named inputs fail, the others are written
  (HubSpot documents 207 only for batch create; 207 from upsert is unverified).
* ``GET``/``POST /crm/v3/properties/contacts`` and ``GET /crm/v3/properties/contacts/{name}``;
  tests define or replace properties with ``define_property`` and delete them with ``delete_property``.
* Bearer-token auth (401 ``INVALID_AUTHENTICATION``) and token rotation (``rotate_token``), missing
  scopes (403), a rolling-window and a daily rate limit with HubSpot's ``X-HubSpot-RateLimit-*``
  headers and 429 ``RATE_LIMIT`` bodies, and faults: random or scripted 5xx (JSON from HubSpot, or
  an HTML page from the CDN in front of it, without HubSpot's headers), and connections closed
  without an answer (before or after the write was applied).
* Everything else answers 404 ``OBJECT_NOT_FOUND``.

Not modelled: search, single-object reads, associations, property groups, string length limits.
Contacts are keyed by lowercase primary email; for upsert the input's ``id`` is the email stored.
"""

from __future__ import annotations

import copy
import http
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

__all__ = ["HubSpotServer", "RequestRecord"]

CONTACTS_PATH = "/crm/v3/objects/contacts"
UPSERT_PATH = f"{CONTACTS_PATH}/batch/upsert"
CREATE_PATH = f"{CONTACTS_PATH}/batch/create"
READ_PATH = f"{CONTACTS_PATH}/batch/read"
UPDATE_PATH = f"{CONTACTS_PATH}/batch/update"
ARCHIVE_PATH = f"{CONTACTS_PATH}/batch/archive"
PROPERTIES_PATH = "/crm/v3/properties/contacts"

MAX_BATCH_INPUTS = 100
PORTAL_ID = 12345678  # fake account ("portal") id, only used in groupName of 429 bodies
FAULT_STATUSES = (500, 502, 503, 504)
PROPERTY_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool"}
PROPERTY_FIELD_TYPES = {
    "text",
    "textarea",
    "date",
    "file",
    "number",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "calculation_equation",
    "html",
    "phonenumber",
}
# HubSpot internal names are lowercase snake case starting with a letter.
PROPERTY_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# The field type a property of each type gets when none is given. HubSpot's table: bool →
# booleancheckbox, enumeration → booleancheckbox/checkbox/radio/select, date/datetime → date;
# its string and number rows are unverified (text and number are what the UI creates).
DEFAULT_FIELD_TYPES = {
    "string": "text",
    "number": "number",
    "date": "date",
    "datetime": "date",
    "enumeration": "select",
    "bool": "booleancheckbox",
}

_LIFECYCLE_STAGES = [
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
]

# name, label, type, fieldType; all in group "contactinformation". A subset of a real account's
# standard contact properties: enough for a contacts sync, each shaped like HubSpot's own.
_STANDARD_PROPERTIES = [
    ("email", "Email", "string", "text"),
    ("firstname", "First Name", "string", "text"),
    ("lastname", "Last Name", "string", "text"),
    ("company", "Company Name", "string", "text"),
    ("jobtitle", "Job Title", "string", "text"),
    ("address", "Street Address", "string", "text"),
    ("city", "City", "string", "text"),
    ("state", "State/Region", "string", "text"),
    ("zip", "Postal Code", "string", "text"),
    ("country", "Country/Region", "string", "text"),
    ("phone", "Phone Number", "string", "phonenumber"),
    ("mobilephone", "Mobile Phone Number", "string", "phonenumber"),
    ("website", "Website URL", "string", "text"),
    ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio"),
    ("hs_object_id", "Record ID", "number", "number"),
    ("createdate", "Create Date", "datetime", "date"),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date"),
    # Secondary emails, a ";" list, read-only through the objects API (HubSpot staff on
    # integrate.hubspot.com/t/11846). Its real type/fieldType are unverified.
    ("hs_additional_emails", "Additional email addresses", "string", "text"),
    # Ids of the contacts merged into this one, a ";" list; type/fieldType unverified.
    ("hs_merged_object_ids", "Merged Contact IDs", "string", "text"),
]
# Values HubSpot sets itself; a client cannot change them.
_SERVER_MANAGED = {
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    "hs_additional_emails",
    "hs_merged_object_ids",
}
# Always in an upsert/create result's properties, whatever the input sent.
_RESULT_PROPERTIES = ("email", "hs_object_id", "createdate", "lastmodifieddate")

_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)

_NOT_JSON = object()  # marks a request body that did not parse

# Drop modes: the connection is closed with no bytes written, before or after the write happened.
DROP_BEFORE = "before"
DROP_AFTER = "after"


def _now_iso() -> str:
    """HubSpot's timestamp format: UTC, milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_hubspot_value(value: Any) -> str:
    """HubSpot stores and returns every property value as a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _split(value: str | None) -> list[str]:
    """The parts of a ``;`` list property (HubSpot's multi-value format)."""
    return [part for part in (value or "").split(";") if part]


def _is_valid_email(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _invalid_value(name: str, error: str, message: str) -> dict:
    """One entry of the list HubSpot embeds in "Property values were not valid: [...]"."""
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
    }


def _property_definition(
    name: str,
    label: str,
    type_: str,
    field_type: str,
    group_name: str,
    *,
    hubspot_defined: bool,
    description: str = "",
    options: list | None = None,
    display_order: int = -1,
    has_unique_value: bool = False,
    hidden: bool = False,
    form_field: bool = False,
    read_only: bool | None = None,
    calculated: bool = False,
    external_options: bool = False,
) -> dict:
    """A property as ``GET /crm/v3/properties/contacts`` returns it.

    Carries every field the client's ``ModelProperty`` / ``PropertyModificationMetadata`` /
    ``Option`` models require under client-side validation. ``read_only`` defaults to whether
    HubSpot manages the value itself; a calculated property is always read-only.
    """
    if read_only is None:
        read_only = name in _SERVER_MANAGED
    now = _now_iso()
    definition = {
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "groupName": group_name,
        "description": description,
        "options": [
            {
                "label": str(option.get("label", option.get("value", ""))),
                "value": str(option.get("value", "")),
                "displayOrder": int(option.get("displayOrder", index)),
                "hidden": bool(option.get("hidden", False)),
                "description": str(option.get("description", "")),
            }
            for index, option in enumerate(options or [])
        ],
        "displayOrder": display_order,
        "calculated": calculated,
        "externalOptions": external_options,
        "hasUniqueValue": has_unique_value,
        "hidden": hidden,
        "formField": form_field,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": bool(read_only or calculated),
        },
        "createdAt": now,
        "updatedAt": now,
        "archived": False,
    }
    if hubspot_defined:  # HubSpot only sends the flag on its own properties
        definition["hubspotDefined"] = True
    return definition


# ---------------------------------------------------------------------- value checks per type

# ASCII digits only, and \Z rather than $ (which also matches before a final newline).
_EPOCH_MS_RE = re.compile(r"^-?\d+\Z", re.ASCII)
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})\Z", re.ASCII)
# ISO 8601 with a zone designator: Z or ±hh:mm (±hhmm, ±hh and a space for the T are refused:
# stricter than ISO 8601, as what HubSpot accepts beyond its example is unverified).
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-](\d{2}):(\d{2}))\Z", re.ASCII
)
# Since 2023-05-22 (changelog "increased validation for contact updates"): no commas, at most one
# period. Leading "+", exponents, ".5" and "5." are refused too (stricter; unverified).
_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?\Z", re.ASCII)
_DAY_MS = 86_400_000


def _date_problem(value: str) -> str | None:
    """Why ``value`` is not a HubSpot ``date``, or None.

    HubSpot takes ``YYYY-MM-DD`` or epoch milliseconds at midnight UTC; anything else is an error
    (timestamps FAQ; 2022 changelog "standardization of date formats"; epoch seconds fail alike).
    """
    match = _DATE_RE.match(value)
    if match:
        try:
            date(*map(int, match.groups()))
        except ValueError:
            pass
        else:
            return None
    elif _EPOCH_MS_RE.match(value):
        into_day = int(value) % _DAY_MS
        if into_day == 0:
            return None
        # HubSpot's real wording (older API): "1579179660000 is at 13:1:0.0 UTC, not midnight!"
        hours, rest = divmod(into_day, 3_600_000)
        minutes, millis = divmod(rest, 60_000)
        return f"{value} is at {hours}:{minutes}:{millis / 1000} UTC, not midnight!"
    # Wording unverified.
    return f"{value} is not a valid date: use YYYY-MM-DD or epoch milliseconds at midnight UTC"


def _datetime_problem(value: str) -> str | None:
    """Why ``value`` is not a HubSpot ``datetime`` (ISO 8601 with a zone, or epoch ms), or None."""
    if _EPOCH_MS_RE.match(value):
        return None
    match = _DATETIME_RE.match(value)
    if match:
        year, month, day, hour, minute, second, zone_h, zone_m = match.groups()
        try:
            datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
        except ValueError:
            pass
        else:
            if zone_h is None or (int(zone_h) <= 23 and int(zone_m) <= 59):
                return None
    # Wording unverified.
    return f"{value} is not a valid datetime: use ISO 8601 with a zone (Z or +hh:mm) or epoch milliseconds"


def _option_text(option: dict) -> str:
    """One option as HubSpot prints it in INVALID_OPTION messages (gitcoinco/code_fund_ads#479)."""
    return (
        f"label: {json.dumps(option['label'])}\nvalue: {json.dumps(option['value'])}\n"
        f"display_order: {option['displayOrder']}\nhidden: {str(option['hidden']).lower()}\n"
        "read_only: false\n"
    )


def _option_problem(definition: dict, value: str) -> str | None:
    """Why ``value`` is not allowed for an enumeration property, or None.

    It must equal an option's value exactly, not its label (changelog 2023-05-22); a ``checkbox``
    (multi-select) takes several, separated by ``;`` ("alpha;delta" fails when delta is not an
    option). Every part must be a value: an empty part, as in HubSpot's ";value" append syntax,
    is refused (stricter; unverified). ``externalOptions`` properties list no options and are not
    checked.
    """
    if definition.get("externalOptions"):
        return None
    allowed = {option["value"] for option in definition["options"]}
    parts = value.split(";") if definition["fieldType"] == "checkbox" else [value]
    bad = next((part for part in parts if part not in allowed), None)
    if bad is None:
        return None
    # For a checkbox list the message names the first bad part (which part HubSpot names: unverified).
    options = ", ".join(_option_text(option) for option in definition["options"])
    return f"{bad} was not one of the allowed options: [{options}]"


def _type_problem(definition: dict, value: str) -> tuple[str, str] | None:
    """(error code, message) when ``value`` does not fit the property's type, else None."""
    if value == "":
        return None  # clears the value, whatever the type
    kind = definition["type"]
    if kind == "date":
        message = _date_problem(value)
        return ("INVALID_DATE", message) if message else None
    if kind == "datetime":
        message = _datetime_problem(value)
        # Code name unverified (only INVALID_DATE is seen in public captures).
        return ("INVALID_DATETIME", message) if message else None
    if kind == "number":
        # Real: INVALID_LONG "1/1/1 was not a valid long." (hull connector fixture; verbb/formie#1755).
        return None if _NUMBER_RE.match(value) else ("INVALID_LONG", f"{value} was not a valid long.")
    if kind == "bool":
        # Code and wording unverified; "true"/"false" are the documented values (labels may read Yes/No).
        return (
            None
            if value in ("true", "false")
            else ("INVALID_BOOLEAN", f"{value} was not a valid boolean: use true or false")
        )
    if kind == "enumeration":
        message = _option_problem(definition, value)
        return ("INVALID_OPTION", message) if message else None
    return None


@dataclass
class RequestRecord:
    """One request as the server saw it.

    ``time`` is ``time.monotonic()`` when the request had fully arrived; ``status`` is ``None``
    until answered and stays ``None`` for a dropped connection, whose ``dropped`` is then
    ``"before"`` or ``"after"`` (whether the write was applied).
    """

    time: float
    method: str
    path: str
    status: int | None = None
    n_inputs: int = 0
    dropped: str | None = None


@dataclass
class _Reply:
    """An answer. With ``html`` set, ``html`` is the whole body, sent as ``text/html`` without
    HubSpot's rate-limit and correlation headers (an error page from the CDN in front of it)."""

    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    html: str | None = None


@dataclass
class _Script:
    """One scripted answer for the next request whose path contains ``path_contains``."""

    status: int
    path_contains: str
    retry_after: float | int | None = None
    policy: str = "TEN_SECONDLY_ROLLING"
    html: bool = False


def _error(status: int, category: str, message: str, **extra: Any) -> _Reply:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return _Reply(status, body)


# The scope each endpoint needs (legacy docs; n8n-io/n8n#2464, in the facts file).
_REQUIRED_SCOPES = {
    ("GET", PROPERTIES_PATH): "crm.schemas.contacts.read",
    ("POST", PROPERTIES_PATH): "crm.schemas.contacts.write",
    ("POST", UPSERT_PATH): "crm.objects.contacts.write",
    ("POST", CREATE_PATH): "crm.objects.contacts.write",
    ("POST", READ_PATH): "crm.objects.contacts.read",
    ("POST", UPDATE_PATH): "crm.objects.contacts.write",
    ("POST", ARCHIVE_PATH): "crm.objects.contacts.write",
}


def _missing_scopes(scopes: list[str]) -> _Reply:
    """HubSpot's real 403 body for a private app without a scope (PostHog/posthog#53339)."""
    return _error(
        403,
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. Read more about required scopes "
        "here: https://developers.hubspot.com/scopes.",
        errors=[
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": scopes},
            }
        ],
        links={"scopes": "https://developers.hubspot.com/scopes"},
    )


def _validation_error(message: str) -> _Reply:
    return _error(400, "VALIDATION_ERROR", message)


def _values_not_valid(problems: list[dict]) -> _Reply:
    """HubSpot's v3 400 for bad values: the list in the message, and one ``errors[]`` item per entry
    (the facts show one item per bad property; whether a batch repeats it per input is unverified)."""
    return _error(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid: " + json.dumps(problems, separators=(",", ":")),
        errors=[
            {"message": problem["message"], "code": problem["error"], "context": {"propertyName": [problem["name"]]}}
            for problem in problems
        ],
    )


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive like the real API, so urllib3 reuses pooled connections as in production.
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm the body of an answer on a
    # reused connection waited for the client's delayed ACK (up to 40 ms), a delay HubSpot's own
    # front ends do not add.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        # Idle kept-alive connections are closed and free their thread. How long HubSpot keeps one
        # is unverified; any server closes them at some point, and the client must cope.
        self.timeout = self.server.hubspot.idle_timeout  # type: ignore[attr-defined]
        super().setup()

    def _serve(self) -> None:
        self.server.hubspot._serve(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the request log is the record; keep pytest output clean


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hubspot: HubSpotServer) -> None:
        self.hubspot = hubspot
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.connections_opened = 0  # TCP connections accepted: a client reusing its pool opens few
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._connections_lock:
            self._connections.add(request)
            self.connections_opened += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Unblock keep-alive handler threads so stop() leaves nothing behind."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def max_in_window(times: list[float], window_s: float) -> int:
    """Most of the sorted `times` that fall within any window of `window_s` seconds."""
    best = start = 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


class HubSpotServer:
    """A HubSpot CRM API on ``127.0.0.1`` for tests; see the module docstring.

    Use as ``with HubSpotServer(rate_limit=5, interval_ms=1000) as hs:`` or ``start()``/``stop()``;
    point the client at ``hs.url``. All state is guarded by one lock, so tests may read it while
    the client runs in other threads.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        rate_limit: int = 100,
        interval_ms: int = 10_000,
        daily_limit: int = 250_000,
        existing_properties: list[str] | tuple[str, ...] | None = None,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        seed: int = 0,
        latency: float = 0.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.token = token
        self.idle_timeout = idle_timeout  # seconds a kept-alive connection may idle before it is closed
        self.rate_limit = rate_limit
        self.interval_ms = interval_ms
        self.daily_limit = daily_limit
        self.error_rate = error_rate
        self.drop_rate = drop_rate
        self.latency = latency
        # Extra fields of the 401 body, `{presented}` in strings replaced by the token sent. Not
        # HubSpot's behaviour: a stand-in for a proxy or gateway that echoes what it was sent, so
        # tests can prove an error body never reaches a log.
        self.unauthorized_extra: dict[str, Any] = {}
        # The private app's scopes; None grants all. A call needing one it lacks gets HubSpot's 403
        # MISSING_SCOPES (whether that 403 counts against the rate limits: unverified; it does not here).
        self.scopes: set[str] | None = None
        self.url: str | None = None
        self.port: int | None = None

        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

        # primary email (lowercase) -> {"id", "properties", "createdAt", "updatedAt", "archived"}
        self.contacts: dict[str, dict] = {}
        # Upsert inputs that fail one by one in a 207 answer: email (lowercase) -> (category, message).
        self.upsert_errors: dict[str, tuple[str, str]] = {}
        # secondary or merged-away email (lowercase) -> the owner's primary email
        self._secondary: dict[str, str] = {}
        # id of a merged-away contact -> id of the contact it was merged into
        self._merged_ids: dict[str, str] = {}
        # id -> record of each archived contact (HubSpot's recycle bin)
        self.archived_contacts: dict[str, dict] = {}
        # primary email -> {"created": n, "updated": n}: how often each contact was written
        self._write_counts: dict[str, dict[str, int]] = {}
        self.request_log: list[RequestRecord] = []
        self._next_id = 1
        self._properties: dict[str, dict] = {}
        for order, (name, label, type_, field_type) in enumerate(_STANDARD_PROPERTIES):
            self._properties[name] = _property_definition(
                name,
                label,
                type_,
                field_type,
                "contactinformation",
                hubspot_defined=True,
                display_order=order,
                options=[{"value": value, "label": text} for value, text in _LIFECYCLE_STAGES]
                if name == "lifecyclestage"
                else None,
                has_unique_value=name == "email",
                form_field=name not in _SERVER_MANAGED,
            )
        for name in existing_properties or ():
            self._properties[name] = _property_definition(
                name,
                name.replace("_", " ").title(),
                "string",
                "text",
                "contactinformation",
                hubspot_defined=False,
            )

        self._retired_tokens: dict[str, float] = {}  # token -> monotonic time it stops working
        self._window: deque[float] = deque()  # arrival times inside the rolling window
        self._daily_used = 0
        self._daily_exhausted = False
        self._scripted_limits: deque[_Script] = deque()
        self._scripted_failures: deque[_Script] = deque()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HubSpotServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer(self)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"hubspot-fake-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_open_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> HubSpotServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting hooks

    def script_429(
        self,
        count: int,
        retry_after: float | int | None = None,
        policy: str = "TEN_SECONDLY_ROLLING",
        *,
        path_contains: str = "/batch/",
    ) -> None:
        """Answer the next ``count`` batch requests 429 whatever the window says.

        ``Retry-After`` is sent only when ``retry_after`` is given (HubSpot does not promise it).
        """
        with self._lock:
            for _ in range(count):
                self._scripted_limits.append(_Script(429, path_contains, retry_after, policy))

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        path_contains: str = "/batch/",
        html: bool = False,
    ) -> None:
        """Answer the next ``count`` batch requests with ``status`` (e.g. 502) without processing.

        With ``html`` the answer is the HTML error page of the CDN in front of HubSpot (Cloudflare):
        ``Content-Type: text/html``, no ``X-HubSpot-RateLimit-*`` headers, no correlation id.
        """
        with self._lock:
            for _ in range(count):
                self._scripted_failures.append(_Script(status, path_contains, html=html))

    def rotate_token(self, new: str, expire_old_after_s: float = 0.0) -> None:
        """A private app's "Rotate and expire now" (the default: the old token dies at once) or
        "Rotate and expire later" (HubSpot keeps the old one 7 days; here `expire_old_after_s`)."""
        with self._lock:
            self._retired_tokens[self.token] = time.monotonic() + expire_old_after_s
            self.token = new

    def _authorized(self, header: str | None) -> bool:
        """Called under the lock."""
        now = time.monotonic()
        return header == f"Bearer {self.token}" or any(
            header == f"Bearer {old}" and now < dies for old, dies in self._retired_tokens.items()
        )

    def exhaust_daily(self) -> None:
        """From now on every authenticated request gets the DAILY 429."""
        with self._lock:
            self._daily_exhausted = True

    def define_property(
        self,
        name: str,
        type_: str,
        field_type: str | None = None,
        *,
        options: list | None = None,
        read_only: bool = False,
        calculated: bool = False,
        external_options: bool = False,
        hubspot_defined: bool = False,
        label: str | None = None,
    ) -> None:
        """Add a contact property, or replace the one of that name (its type and all).

        ``field_type`` defaults per type (``DEFAULT_FIELD_TYPES``). ``options`` are values or
        ``(value, label)`` pairs. ``read_only`` makes ``modificationMetadata.readOnlyValue`` true;
        ``calculated`` also sets ``calculated`` and the field type ``calculation_equation``;
        ``external_options`` (stages, owners) sets ``externalOptions``: values are not checked.
        """
        if type_ not in PROPERTY_TYPES:
            raise ValueError(f"type {type_!r} is not one of {sorted(PROPERTY_TYPES)}")
        if calculated:
            field_type = "calculation_equation"
        field_type = field_type or DEFAULT_FIELD_TYPES[type_]
        if field_type not in PROPERTY_FIELD_TYPES:
            raise ValueError(f"fieldType {field_type!r} is not one of {sorted(PROPERTY_FIELD_TYPES)}")
        if not PROPERTY_NAME_RE.match(name):
            raise ValueError(f"property name {name!r} is invalid")
        option_dicts = []
        for option in options or ():
            value, text = option if isinstance(option, tuple) else (option, option)
            option_dicts.append({"value": str(value), "label": str(text)})
        with self._lock:
            previous = self._properties.get(name)
            self._properties[name] = _property_definition(
                name,
                label or name.replace("_", " ").title(),
                type_,
                field_type,
                previous["groupName"] if previous else "contactinformation",
                hubspot_defined=hubspot_defined,
                options=option_dicts,
                display_order=previous["displayOrder"] if previous else -1,
                has_unique_value=bool(previous and previous["hasUniqueValue"]),
                form_field=not (read_only or calculated),
                read_only=read_only,
                calculated=calculated,
                external_options=external_options,
            )

    def delete_property(self, name: str) -> None:
        """Delete a contact property, as someone in HubSpot's settings would."""
        with self._lock:
            del self._properties[name]

    def add_secondary_email(self, primary_email: str, secondary_email: str) -> None:
        """Give the contact with ``primary_email`` another address (``hs_additional_emails``)."""
        with self._lock:
            owner = self._owner_key(primary_email)
            secondary = secondary_email.strip().lower()
            if secondary in self.contacts or secondary in self._secondary:
                raise ValueError(f"{secondary} already belongs to a contact")
            self._append(self.contacts[owner], "hs_additional_emails", [secondary])
            self._secondary[secondary] = owner

    def merge_contacts(self, primary_email: str, merged_email: str) -> None:
        """Merge the contact of ``merged_email`` into the one of ``primary_email``.

        The merged contact disappears; its emails (primary and secondary) become the primary's
        ``hs_additional_emails``, its id (and the ids merged into it) join ``hs_merged_object_ids``.
        """
        with self._lock:
            owner = self._owner_key(primary_email)
            merged = self._owner_key(merged_email)
            if owner == merged:
                raise ValueError(f"{primary_email} and {merged_email} are the same contact")
            record, gone = self.contacts[owner], self.contacts.pop(merged)
            gone_emails = [merged] + _split(gone["properties"].get("hs_additional_emails"))
            gone_ids = [gone["id"]] + _split(gone["properties"].get("hs_merged_object_ids"))
            self._append(record, "hs_additional_emails", gone_emails)
            self._append(record, "hs_merged_object_ids", gone_ids)
            for email in gone_emails:
                self._secondary[email] = owner
            for merged_id, into in self._merged_ids.items():
                if into == gone["id"]:
                    self._merged_ids[merged_id] = record["id"]
            self._merged_ids[gone["id"]] = record["id"]
            record["updatedAt"] = record["properties"]["lastmodifieddate"] = _now_iso()

    def _owner_key(self, email: str) -> str:
        """The primary email of the contact ``email`` names (primary or secondary). Under the lock."""
        key = email.strip().lower()
        key = self._secondary.get(key, key)
        if key not in self.contacts:
            raise KeyError(f"no contact has the email {email}")
        return key

    @staticmethod
    def _append(record: dict, name: str, values: list[str]) -> None:
        current = _split(record["properties"].get(name))
        record["properties"][name] = ";".join(current + [v for v in values if v not in current])

    # ------------------------------------------------------------------ observation

    def contact_by_email(self, email: str) -> dict | None:
        """A copy of the contact whose primary or secondary email is ``email``, or None."""
        with self._lock:
            key = email.strip().lower()
            record = self.contacts.get(self._secondary.get(key, key))
            return copy.deepcopy(record)

    def contact_by_id(self, contact_id: str | int) -> dict | None:
        """A copy of the contact with that id, following merges; or None."""
        with self._lock:
            contact_id = str(contact_id)
            contact_id = self._merged_ids.get(contact_id, contact_id)
            record = next((r for r in self.contacts.values() if r["id"] == contact_id), None)
            return copy.deepcopy(record)

    def created_count(self, email: str | None = None) -> int:
        """How many contacts were created: in total, or with that primary email."""
        with self._lock:
            if email is None:
                return sum(counts["created"] for counts in self._write_counts.values())
            return self._write_counts.get(email.strip().lower(), {}).get("created", 0)

    def write_counts(self) -> dict[str, dict[str, int]]:
        """Primary email -> ``{"created": n, "updated": n}``: the writes applied to each contact
        by upsert or create (a merged-away contact keeps its own entry)."""
        with self._lock:
            return copy.deepcopy(self._write_counts)

    def contacts_snapshot(self) -> dict[str, dict]:
        """A deep copy of the stored contacts (lowercase email -> record)."""
        with self._lock:
            return copy.deepcopy(self.contacts)

    @property
    def properties(self) -> list[dict]:
        """A copy of the account's contact property definitions."""
        with self._lock:
            return copy.deepcopy(list(self._properties.values()))

    def _records(self) -> list[RequestRecord]:
        with self._lock:
            return [copy.copy(record) for record in self.request_log]

    def count_requests(self, path_contains: str | None = None) -> int:
        return sum(1 for r in self._records() if path_contains is None or path_contains in r.path)

    def count_status(self, status: int) -> int:
        return sum(1 for r in self._records() if r.status == status)

    def first_429_time(self) -> float | None:
        """Arrival time (monotonic) of the first request answered 429, or None."""
        return next((r.time for r in self._records() if r.status == 429), None)

    def max_requests_in_window(self, since: float | None = None, window_s: float | None = None) -> int:
        """Most requests that arrived within any window of ``window_s`` (default: the limit's).

        Counts every logged request (whatever its answer), only those at or after ``since``.
        """
        window = self.interval_ms / 1000 if window_s is None else window_s
        return max_in_window(sorted(r.time for r in self._records() if since is None or r.time >= since), window)

    @property
    def connections_opened(self) -> int:
        """TCP connections clients opened to this server since it started."""
        return self._httpd.connections_opened if self._httpd is not None else 0

    def reset_log(self) -> None:
        """Forget logged requests (rate-limit state and contacts are kept)."""
        with self._lock:
            self.request_log.clear()

    # ------------------------------------------------------------------ request flow

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        # Read the whole body even when we then drop: unread bytes turn a clean close into a reset.
        raw = handler.rfile.read(length) if length else b""
        path = urlsplit(handler.path).path.rstrip("/") or "/"
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = _NOT_JSON
        n_inputs = len(body["inputs"]) if isinstance(body, dict) and isinstance(body.get("inputs"), list) else 0
        with self._lock:
            record = RequestRecord(time.monotonic(), handler.command, path, n_inputs=n_inputs)
            self.request_log.append(record)
            if self._authorized(handler.headers.get("Authorization")):
                missing = self._missing_scopes(handler.command, path)
                verdict: _Reply | str | None = _missing_scopes(missing) if missing else self._admit(path)
            else:
                presented = handler.headers.get("Authorization", "").removeprefix("Bearer ")
                verdict = _error(401, "INVALID_AUTHENTICATION", _AUTH_MESSAGE)
                verdict.body.update(json.loads(json.dumps(self.unauthorized_extra).replace("{presented}", presented)))

        if self.latency:
            time.sleep(self.latency)  # a round trip's worth, outside the lock

        reply: _Reply | None = verdict if isinstance(verdict, _Reply) else None
        if verdict is None or verdict == DROP_AFTER:
            with self._lock:
                reply = self._process(handler.command, path, body)
        dropped = verdict if verdict in (DROP_BEFORE, DROP_AFTER) else None

        with self._lock:
            record.status = None if dropped else reply.status  # type: ignore[union-attr]
            record.dropped = dropped
            headers = self._rate_headers()

        if dropped:
            self._drop(handler)
        else:
            self._write(handler, reply, headers)  # type: ignore[arg-type]

    def _missing_scopes(self, method: str, path: str) -> list[str]:
        needed = _REQUIRED_SCOPES.get((method, path))
        return [needed] if needed and self.scopes is not None and needed not in self.scopes else []

    def _admit(self, path: str) -> _Reply | str | None:
        """Rate limits, then faults. Returns a final reply, a drop mode, or None to process.

        Called under the lock. Every authenticated arrival counts against both limits, including
        the ones refused here, as HubSpot counts them.
        """
        now = time.monotonic()
        self._daily_used += 1
        self._window.append(now)
        self._trim_window(now)

        if self._daily_exhausted or self._daily_used > self.daily_limit:
            return self._rate_limited("DAILY")
        script = self._take_script(self._scripted_limits, path)
        if script is not None:
            reply = self._rate_limited(script.policy)
            if script.retry_after is not None:
                reply.headers["Retry-After"] = str(script.retry_after)
            return reply
        if len(self._window) > self.rate_limit:
            return self._rate_limited("TEN_SECONDLY_ROLLING")

        script = self._take_script(self._scripted_failures, path)
        if script is not None:
            return self._server_error(script.status, html=script.html)
        if self.error_rate and self._rng.random() < self.error_rate:
            return self._server_error(self._rng.choice(FAULT_STATUSES))
        if self.drop_rate and self._rng.random() < self.drop_rate:
            # Real connections die both ways: the write may or may not have landed.
            return DROP_AFTER if self._rng.random() < 0.5 else DROP_BEFORE
        return None

    @staticmethod
    def _take_script(queue: deque[_Script], path: str) -> _Script | None:
        if queue and queue[0].path_contains in path:
            return queue.popleft()
        return None

    def _trim_window(self, now: float) -> None:
        horizon = now - self.interval_ms / 1000
        while self._window and self._window[0] <= horizon:
            self._window.popleft()

    def _rate_headers(self) -> dict[str, str]:
        self._trim_window(time.monotonic())
        daily_remaining = 0 if self._daily_exhausted else max(0, self.daily_limit - self._daily_used)
        return {
            "X-HubSpot-RateLimit-Max": str(self.rate_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.rate_limit - len(self._window))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(daily_remaining),
        }

    @staticmethod
    def _rate_limited(policy: str) -> _Reply:
        # A 429 body has errorType/policyName instead of category.
        return _Reply(
            429,
            {
                "status": "error",
                "message": f"You have reached your {policy.lower()} limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": policy,
                "groupName": f"publicapi:private-app:{PORTAL_ID}",
            },
        )

    @staticmethod
    def _server_error(status: int, *, html: bool = False) -> _Reply:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        if html:
            # The page Cloudflare (nginx underneath) serves when the origin fails or times out.
            title = f"{status} {phrase}"
            return _Reply(
                status,
                {},
                html=(
                    f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                    f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
                    "</body>\r\n</html>\r\n"
                ),
            )
        return _error(status, "INTERNAL_ERROR", phrase)

    @staticmethod
    def _write(handler: _Handler, reply: _Reply, rate_headers: dict[str, str]) -> None:
        if reply.html is not None:
            data = reply.html.encode("utf-8")
            content_type = "text/html"
            headers = dict(reply.headers)  # none of HubSpot's own headers
        else:
            data = b"" if reply.status == 204 else json.dumps(reply.body).encode("utf-8")
            content_type = "application/json;charset=utf-8"
            headers = {**rate_headers, **reply.headers}
            correlation_id = reply.body.get("correlationId")
            if correlation_id:
                headers["X-HubSpot-Correlation-Id"] = correlation_id
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            handler.close_connection = True  # the client went away; nothing to tell it

    @staticmethod
    def _drop(handler: _Handler) -> None:
        """Close the connection without a byte: the client sees RemoteDisconnected/ProtocolError."""
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ------------------------------------------------------------------ endpoints (under lock)

    def _process(self, method: str, path: str, body: Any) -> _Reply:
        if method == "POST" and path == UPSERT_PATH:
            return self._batch_upsert(body)
        if method == "POST" and path == CREATE_PATH:
            return self._batch_create(body)
        if method == "POST" and path == READ_PATH:
            return self._batch_read(body)
        if method == "POST" and path == UPDATE_PATH:
            return self._batch_update(body)
        if method == "POST" and path == ARCHIVE_PATH:
            return self._batch_archive(body)
        if method == "GET" and path == PROPERTIES_PATH:
            return _Reply(200, {"results": copy.deepcopy(list(self._properties.values()))})
        if method == "POST" and path == PROPERTIES_PATH:
            return self._create_property(body)
        if method == "GET" and path.startswith(PROPERTIES_PATH + "/"):
            name = path[len(PROPERTIES_PATH) + 1 :]
            if name in self._properties:
                return _Reply(200, copy.deepcopy(self._properties[name]))
            return _error(404, "OBJECT_NOT_FOUND", f'Unable to find property "{name}"')
        return _error(404, "OBJECT_NOT_FOUND", f"No resource found for {method} {path}")

    @staticmethod
    def _batch_inputs(body: Any) -> tuple[list[dict] | None, _Reply | None]:
        """The common checks of a batch body: JSON object, an ``inputs`` list, at most 100."""
        if body is _NOT_JSON:
            return None, _validation_error("Invalid input JSON: the body is not valid JSON")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("inputs"), list)
            or not all(isinstance(item, dict) for item in body["inputs"])
        ):
            return None, _validation_error('Invalid input JSON: expected an object with an "inputs" array of objects')
        inputs = body["inputs"]
        if len(inputs) > MAX_BATCH_INPUTS:
            return None, _validation_error(
                f"The maximum number of inputs supported in a batch is {MAX_BATCH_INPUTS}. "
                f"The batch provided has {len(inputs)} inputs."
            )
        return inputs, None

    def _value_problems(self, properties: dict, emails: list[str]) -> list[dict]:
        """Everything HubSpot would reject in one input's values, as its error entries.

        "Read-only and non-existent properties will result in an error" (update-contacts
        reference), whatever the value, even ``""``; values of writable ones are checked by type.
        """
        problems = []
        for name, value in properties.items():
            definition = self._properties.get(name)
            if definition is None:
                problems.append(_invalid_value(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            elif definition["modificationMetadata"]["readOnlyValue"]:
                # Seen for real: '"hs_object_id" is a calculated property; its value c…' (truncated in
                # mautic/mautic#8785). The rest of that sentence and the code READ_ONLY_VALUE are unverified.
                problems.append(
                    _invalid_value(
                        name, "READ_ONLY_VALUE", f'"{name}" is a calculated property; its value cannot be set'
                    )
                )
            elif name != "email":  # emails are checked below, as INVALID_EMAIL
                problem = _type_problem(definition, _as_hubspot_value(value))
                if problem:
                    problems.append(_invalid_value(name, *problem))
        for address in dict.fromkeys(emails):  # de-duplicated, order kept
            if not _is_valid_email(address):
                problems.append(_invalid_value("email", "INVALID_EMAIL", f"Email address {address} is invalid"))
        return problems

    def _resolve(self, email: str) -> str:
        """The primary email of the contact ``email`` looks up (itself when it is no one's
        secondary). HubSpot: secondary emails "can be used to look up contacts in the same way
        primary email addresses can" (HubSpot staff, integrate.hubspot.com/t/11846)."""
        return self._secondary.get(email, email)

    def _store(self, email: str, properties: dict) -> tuple[dict, bool]:
        """Create or update the contact ``email`` names, as a primary or a secondary email;
        returns (record, created).

        The primary email never changes here: an ``email`` property in the input is not applied
        (for a secondary email it would name the address the contact is already known by).
        """
        now = _now_iso()
        key = self._resolve(email.strip().lower())
        record = self.contacts.get(key) if key else None
        created = record is None
        if created:
            contact_id = str(self._next_id)
            self._next_id += 1
            record = {
                "id": contact_id,
                "properties": {"createdate": now, "hs_object_id": contact_id},
                "createdAt": now,
                "updatedAt": now,
                "archived": False,
            }
            # HubSpot allows contacts without email; keep those under their id.
            key = key or f"id:{contact_id}"
            self.contacts[key] = record
            if not key.startswith("id:"):
                record["properties"]["email"] = key
        for name, value in properties.items():  # read-only ones were refused before
            if name != "email":
                record["properties"][name] = _as_hubspot_value(value)
        record["properties"]["lastmodifieddate"] = now
        record["updatedAt"] = now
        counts = self._write_counts.setdefault(key, {"created": 0, "updated": 0})
        counts["created" if created else "updated"] += 1
        return record, created

    @staticmethod
    def _result(record: dict, properties: dict) -> dict:
        """A result as a batch answer carries it: the properties the input sent plus
        ``_RESULT_PROPERTIES`` (whether HubSpot echoes more is unverified; fewer is stricter)."""
        result = copy.deepcopy(record)
        result["properties"] = {
            name: value
            for name, value in result["properties"].items()
            if name in properties or name in _RESULT_PROPERTIES
        }
        return result

    def _shuffled(self, results: list[dict]) -> list[dict]:
        """HubSpot does not promise results in input order: callers must match them by email/id."""
        self._rng.shuffle(results)
        return results

    def _duplicates(self, emails: list[str]) -> list[str]:
        """The emails of one batch that name the same contact: equal ones, or a primary and its
        secondary (whether HubSpot refuses the latter as duplicates is unverified; stricter)."""
        resolved = [self._resolve(email) for email in emails]
        return sorted({email for email, key in zip(emails, resolved) if email and resolved.count(key) > 1})

    def _batch_upsert(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        for item in inputs:
            id_property = item.get("idProperty")
            if id_property != "email":
                return _validation_error(
                    f'idProperty "{id_property}" is not supported here; this fake upserts contacts by "email" only'
                )
            if not isinstance(item.get("id"), str) or not item["id"].strip():
                return _validation_error('Invalid input JSON: every input needs an "id"')
            if not isinstance(item.get("properties", {}), dict):
                return _validation_error('Invalid input JSON: "properties" must be an object')
        ids = [item["id"].strip().lower() for item in inputs]
        duplicates = self._duplicates(ids)
        if duplicates:
            return _validation_error(
                f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique"
            )

        # Validate everything first: one bad value rejects the whole batch, nothing is written.
        problems = []
        for item in inputs:
            properties = item.get("properties") or {}
            emails = [item["id"].strip()]
            if properties.get("email"):
                emails.append(str(properties["email"]).strip())
            problems += self._value_problems(properties, emails)
        if problems:
            return _values_not_valid(problems)

        # Inputs scripted to fail alone (upsert_errors) are not written; the others are. A 207 from
        # upsert, and "ids" as its context key, are unverified: HubSpot documents 207 only for batch
        # create; hubspot-api-client 12.0.0 maps an upsert 207 to
        # BatchResponseSimplePublicUpsertObjectWithErrors.
        results, errors = [], []
        for item, key in zip(inputs, ids):
            if key in self.upsert_errors:
                category, message = self.upsert_errors[key]
                errors.append(
                    {
                        "status": "error",
                        "category": category,
                        "message": message,
                        "context": {"ids": [item["id"]]},
                        "errors": [],
                        "links": {},
                    }
                )
                continue
            properties = item.get("properties") or {}
            record, created = self._store(key, properties)
            results.append({**self._result(record, properties), "new": created})
        body_out: dict[str, Any] = {
            "status": "COMPLETE",
            "results": self._shuffled(results),
            "startedAt": started,
            "completedAt": _now_iso(),
        }
        if errors:
            body_out.update(numErrors=len(errors), errors=errors)
            return _Reply(207, body_out)
        return _Reply(200, body_out)

    def _batch_create(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        emails = [str((item.get("properties") or {}).get("email") or "").strip().lower() for item in inputs]
        duplicates = self._duplicates(emails)
        if duplicates:
            return _validation_error(
                f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique"
            )

        # (input, None) to create, or (input, error reply) for a failed input.
        outcomes: list[tuple[dict, _Reply | None]] = []
        for item, email in zip(inputs, emails):
            properties = item.get("properties") or {}
            problems = self._value_problems(properties, [email] if email else [])
            if problems:
                outcomes.append((item, _values_not_valid(problems)))
            elif email and self._resolve(email) in self.contacts:
                # A secondary email is taken as much as a primary one.
                existing = self.contacts[self._resolve(email)]["id"]
                outcomes.append((item, _error(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")))
            else:
                outcomes.append((item, None))

        # An input without objectWriteTraceId fails the whole batch (validation before conflict).
        batch_failures = [error for item, error in outcomes if error is not None and not item.get("objectWriteTraceId")]
        if batch_failures:
            return min(batch_failures, key=lambda error: error.status)

        results, errors = [], []
        for (item, error), email in zip(outcomes, emails):
            if error is None:
                properties = item.get("properties") or {}
                record, _ = self._store(email, properties)
                results.append(self._result(record, properties))
            else:
                errors.append(
                    {
                        "status": "error",
                        "category": error.body["category"],
                        "message": error.body["message"],
                        "context": {"objectWriteTraceId": [str(item["objectWriteTraceId"])]},
                        "errors": [],
                        "links": {},
                    }
                )
        body_out: dict[str, Any] = {
            "status": "COMPLETE",
            "results": self._shuffled(results),
            "startedAt": started,
            "completedAt": _now_iso(),
        }
        if errors:
            body_out.update(numErrors=len(errors), errors=errors)
            return _Reply(207, body_out)
        return _Reply(201, body_out)

    def _ids_of(self, inputs: list[dict]) -> tuple[list[str] | None, _Reply | None]:
        """Each input's ``id`` as a string; a missing one or a duplicate refuses the batch."""
        if not all(isinstance(item.get("id"), (str, int)) and str(item["id"]).strip() for item in inputs):
            return None, _validation_error('Invalid input JSON: every input needs an "id"')
        ids = [str(item["id"]).strip() for item in inputs]
        duplicates = sorted({value for value in ids if ids.count(value) > 1})
        if duplicates:
            return None, _validation_error(
                f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique"
            )
        return ids, None

    def _key_of_id(self, contact_id: str) -> str | None:
        """The store key of the live contact with that id (merged-away ids are not followed)."""
        return next((key for key, record in self.contacts.items() if record["id"] == contact_id), None)

    def _keys_of_ids(self, ids: list[str]) -> tuple[list[str] | None, _Reply | None]:
        """The contacts the ids name; any unknown id refuses the whole batch (unverified, stricter)."""
        keys = [self._key_of_id(contact_id) for contact_id in ids]
        unknown = [contact_id for contact_id, key in zip(ids, keys) if key is None]
        if unknown:
            return None, _error(
                404,
                "OBJECT_NOT_FOUND",
                "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid "
                "and that objects are not archived.",
                context={"ids": unknown},
            )
        return [key for key in keys if key is not None], None

    def _batch_read(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        id_property = body.get("idProperty")
        if id_property not in (None, "email", "hs_object_id"):
            return _validation_error(
                f'idProperty "{id_property}" is not supported here; this fake reads by id or "email"'
            )
        ids, failure = self._ids_of(inputs)
        if failure:
            return failure
        assert ids is not None
        by_email = id_property == "email"
        if by_email:
            ids = [value.lower() for value in ids]
            duplicates = self._duplicates(ids)
            if duplicates:
                return _validation_error(
                    f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique"
                )
        wanted = set(body.get("properties") or []) | set(_RESULT_PROPERTIES)
        results, missing = [], []
        for value in ids:
            key = self._resolve(value) if by_email else self._key_of_id(value)
            record = self.contacts.get(key) if key else None
            if record is None:
                missing.append(value)
                continue
            result = copy.deepcopy(record)
            result["properties"] = {name: v for name, v in record["properties"].items() if name in wanted}
            results.append(result)
        body_out: dict[str, Any] = {
            "status": "COMPLETE",
            "results": self._shuffled(results),
            "startedAt": started,
            "completedAt": _now_iso(),
        }
        if not missing:
            return _Reply(200, body_out)
        body_out.update(
            numErrors=1,
            errors=[
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that "
                    "ids are valid and that objects are not archived.",
                    "context": {"ids": missing},
                    "errors": [],
                    "links": {},
                }
            ],
        )
        return _Reply(207, body_out)

    def _batch_update(self, body: Any) -> _Reply:
        started = _now_iso()
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        if any(item.get("idProperty") not in (None, "hs_object_id") for item in inputs):
            return _validation_error("idProperty is not supported here; this fake updates by id only")
        ids, failure = self._ids_of(inputs)
        if failure:
            return failure
        assert ids is not None
        if not all(isinstance(item.get("properties", {}), dict) for item in inputs):
            return _validation_error('Invalid input JSON: "properties" must be an object')
        keys, failure = self._keys_of_ids(ids)
        if failure:
            return failure
        assert keys is not None
        problems = []
        for item, key in zip(inputs, keys):
            properties = item.get("properties") or {}
            email = str(properties.get("email") or "").strip().lower()
            if email and email != key:
                return _validation_error("Changing a contact's primary email is not modelled by this fake")
            problems += self._value_problems(properties, [email] if email else [])
        if problems:
            return _values_not_valid(problems)
        results = []
        for item, key in zip(inputs, keys):
            properties = item.get("properties") or {}
            record, _ = self._store(key, properties)
            results.append(self._result(record, properties))
        return _Reply(
            200,
            {"status": "COMPLETE", "results": self._shuffled(results), "startedAt": started, "completedAt": _now_iso()},
        )

    def _batch_archive(self, body: Any) -> _Reply:
        inputs, failure = self._batch_inputs(body)
        if failure:
            return failure
        assert inputs is not None
        ids, failure = self._ids_of(inputs)
        if failure:
            return failure
        assert ids is not None
        keys, failure = self._keys_of_ids(ids)
        if failure:
            return failure
        assert keys is not None
        now = _now_iso()
        for key in keys:
            record = self.contacts.pop(key)
            record.update(archived=True, archivedAt=now)
            self.archived_contacts[record["id"]] = record
            for secondary in [email for email, owner in self._secondary.items() if owner == key]:
                del self._secondary[secondary]
        return _Reply(204, {})

    def _create_property(self, body: Any) -> _Reply:
        if not isinstance(body, dict):
            return _validation_error("Invalid input JSON: expected a property object")
        required = ["name", "label", "type", "fieldType", "groupName"]
        missing = [key for key in required if not body.get(key)]
        if missing:
            return _validation_error(
                "Invalid input JSON: Cannot build PropertyCreate, some of required attributes "
                f"are not set [{', '.join(missing)}]"
            )
        name = body["name"]
        if not isinstance(name, str) or not PROPERTY_NAME_RE.match(name):
            return _validation_error(
                f"Property name {name!r} is invalid: use lowercase letters, digits and "
                "underscores, starting with a letter"
            )
        if body["type"] not in PROPERTY_TYPES:
            return _validation_error(
                f"Invalid input JSON: type {body['type']!r} is not one of {sorted(PROPERTY_TYPES)}"
            )
        if body["fieldType"] not in PROPERTY_FIELD_TYPES:
            return _validation_error(
                f"Invalid input JSON: fieldType {body['fieldType']!r} is not one of {sorted(PROPERTY_FIELD_TYPES)}"
            )
        if name in self._properties:
            return _error(409, "CONFLICT", f"Property named '{name}' already exists.")
        definition = _property_definition(
            name,
            str(body["label"]),
            body["type"],
            body["fieldType"],
            str(body["groupName"]),
            hubspot_defined=False,
            description=str(body.get("description") or ""),
            options=body.get("options") or [],
            display_order=int(body.get("displayOrder", -1)),
            has_unique_value=bool(body.get("hasUniqueValue", False)),
            hidden=bool(body.get("hidden", False)),
            form_field=bool(body.get("formField", False)),
        )
        self._properties[name] = definition
        return _Reply(201, copy.deepcopy(definition))
