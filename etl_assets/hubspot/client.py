"""HubSpot's CRM API through the real `hubspot-api-client`, with our rate limiting and retries.

The client's own urllib3 retry never retries a POST, and raises MaxRetryError rather than
ApiException when it gives up, so the retry loop is ours: 429s wait on the shared limiter
(not counted as attempts, bounded in time), a 401 is retried once the token has been rotated
(see `_token_renewed`); every other error answer is raised as HubSpotApiError and judged by
`etl_assets.errors.classify`, like dropped connections: 5xx and drops back off exponentially
(`call_with_retries`), a 4xx surfaces at once and fails the step without a step retry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from hubspot import HubSpot
from hubspot.crm.associations.v4 import ApiException as AssociationsApiException
from hubspot.crm.companies import ApiException as CompaniesApiException
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectId,
)
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import Option, PropertyCreate
from hubspot.discovery.discovery_base import DiscoveryBase

from etl_assets.errors import TransientError
from etl_assets.hubspot.errors import HubSpotApiError, parse_error, retry_after_seconds
from etl_assets.hubspot.properties import CREATED_FIELD_TYPES, PropertyDefinition
from etl_assets.hubspot.ratelimit import DailyLimitReached, RollingWindowLimiter
from etl_assets.hubspot.sync import UpsertAnswer
from etl_assets.retrying import RetrySettings, call_with_retries


def _snake_keys(item: dict) -> dict:
    """HubSpot's camelCase top-level keys (`createdAt`, `objectWriteTraceId`) as the models name them."""
    return {_snake(key): value for key, value in item.items()}


# The few keys HubSpot answers with, converted once: a regex per key of every result of a batch
# was 1.4 ms of a request's ~9 ms of client CPU. Bounded, whatever keys a server sends.
@functools.lru_cache(maxsize=256)
def _snake(key: str) -> str:
    return _CAMEL_HUMP.sub("_", key).lower()


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Each API module of hubspot-api-client raises its own ApiException class (same fields).
_API_EXCEPTIONS = (ContactsApiException, PropertiesApiException, CompaniesApiException, AssociationsApiException)


class _ApiObjects:
    """hubspot-api-client's `api_factory` hook: each API object, with its ApiClient and urllib3
    pool, built once per client and shared by the sender threads (urllib3's pools are thread-safe).

    The library's own factory builds a new one at every `client.crm.contacts.batch_api`: each
    request then opened a new connection (against HubSpot a new TLS handshake, with a new SSL
    context) and read the package's version from its installed metadata.
    """

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, package: Any, api_name: str, config: dict) -> Any:
        key = (package.__name__, api_name)
        with self._lock:
            if key not in self._built:
                # The library's own builder, kept as it is (a protected member: hubspot-api-client
                # is pinned, and test_client fails if the builder stops being reached this way).
                self._built[key] = DiscoveryBase._default_api_factory(package, api_name, config)
            return self._built[key]


class HubSpotApi:
    """`reread_token` reads the token again from its source, past any cache, after a 401.
    `connections`: kept open to HubSpot per API, at least one per request in flight."""

    def __init__(
        self,
        access_token: str,
        base_url: str,
        limiter: RollingWindowLimiter,
        retry: RetrySettings,
        log: logging.Logger,
        timeout_s: float = 30.0,
        reread_token: Callable[[], str | None] | None = None,
        connections: int = 10,
    ):
        self._base_url = base_url.rstrip("/")
        self._connections = connections
        self._token = access_token
        self._client = self._new_client(access_token)
        self._reread_token = reread_token
        self._token_lock = threading.Lock()
        self._token_reread = False
        self.limiter, self.retry, self.log, self.timeout_s = limiter, retry, log, timeout_s
        self._counter_lock = threading.Lock()
        self.calls = 0
        self.rate_limited = 0
        self.retried = 0

    def _new_client(self, token: str) -> HubSpot:
        return HubSpot(
            access_token=token,
            host=self._base_url,
            api_factory=_ApiObjects(),
            # One kept per request in flight: the library keeps 5 per CPU, fewer than 8 on one CPU.
            connection_pool_maxsize=self._connections,
        )

    @property
    def account_key(self) -> str:
        """Names the account (API base and token) without holding the secret: a rotated token names another."""
        return hashlib.sha256(f"{self._base_url}\n{self._token}".encode()).hexdigest()[:32]

    def _count(self, attribute: str) -> None:
        with self._counter_lock:
            setattr(self, attribute, getattr(self, attribute) + 1)

    def _token_renewed(self, rejected: HubSpot) -> bool:
        """After `rejected` got a 401: whether to retry, now with a rotated token.

        The token is read again once per run: if it changed, every request from then on uses the
        new one (batches in flight with the old one retry with it); if not, or if the new one is
        rejected too, the 401 stands. The lock makes concurrent 401s wait for that one read.
        """
        with self._token_lock:
            if self._client is not rejected:
                return True  # another batch already switched to the rotated token
            if self._token_reread or self._reread_token is None:
                return False
            token = self._reread_token()
            self._token_reread = True
            if not token or token == self._token:
                self.log.warning("HubSpot answered 401; the access token read again is unchanged")
                return False
            self.log.warning("HubSpot answered 401; the access token was rotated: going on with the new one")
            self._token, self._client = token, self._new_client(token)
            return True

    def call(self, what: str, request: Callable[[HubSpot], tuple[Any, int, Any]]) -> Any:
        """One request through the limiter, with retries, the token re-read on 401 and errors parsed."""

        def attempt() -> Any:
            waited_since = time.monotonic()
            while True:
                self._count("calls")
                client = self._client
                try:
                    with self.limiter.slot():
                        data, _status, headers = request(client)
                except _API_EXCEPTIONS as exc:
                    self.limiter.observe(exc.headers)
                    error = parse_error(exc.status or 0, exc.body)
                    if error.status == 401 and self._token_renewed(client):
                        continue
                    if error.status != 429:
                        raise HubSpotApiError(error) from None  # classify: 5xx transient, 4xx permanent
                    self._count("rate_limited")
                    if error.policy == "DAILY":
                        raise DailyLimitReached(error.message) from None
                    pause = self.limiter.back_off(retry_after_seconds(exc.headers))
                    self.log.info("HubSpot 429 (%s) on %s: pausing all requests %.1fs", error.policy, what, pause)
                    if time.monotonic() - waited_since > self.retry.max_seconds:
                        raise TransientError(f"still rate limited after {self.retry.max_seconds:.0f}s") from None
                    continue
                self.limiter.observe(headers)
                return data

        return call_with_retries(attempt, what, self.retry, self.log, on_retry=lambda _exc: self._count("retried"))

    def batch(self, what: str, request: Callable[..., Any]) -> UpsertAnswer:
        """A batch call's results and a 207's per-input errors, as dicts with the snake_case keys
        the client's models would give. `request(client, **raw)` passes `raw` to the endpoint: the
        JSON is read here instead of into the client's models, which took about half of a
        request's CPU and so, under the GIL, set the pace of a sync instead of the rate limit."""

        def raw(client: HubSpot) -> tuple[Any, int, Any]:
            response = request(client, _preload_content=False)
            return json.loads(response.data or b"{}"), response.status, response.headers

        answer = self.call(what, raw)
        return UpsertAnswer(
            results=[_snake_keys(result) for result in answer.get("results") or []],
            errors=[_snake_keys(error) for error in answer.get("errors") or []],
        )

    def upsert_contacts(self, inputs: list[dict]) -> UpsertAnswer:
        """Upsert by email: HubSpot's results (id, properties, new, ...) and a 207's per-input errors."""
        # The JSON body as HubSpot takes it, not the client's models: building and serialising
        # those cost a third of a batch's CPU on the sync's busiest path.
        body = {
            "inputs": [{"idProperty": "email", "id": item["id"], "properties": item["properties"]} for item in inputs]
        }
        return self.batch(
            f"upserting {len(inputs)} contacts",
            lambda client, **raw: client.crm.contacts.batch_api.upsert_with_http_info(
                batch_input_simple_public_object_batch_input_upsert=body, _request_timeout=self.timeout_s, **raw
            ),
        )

    def create_contacts(self, inputs: list[dict]) -> UpsertAnswer:
        """Create contacts ({"objectWriteTraceId", "properties"} each): with a trace id on each input,
        HubSpot answers a failed input alone (207, errors naming the trace id)."""
        body = BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                SimplePublicObjectBatchInputForCreate(
                    object_write_trace_id=item["objectWriteTraceId"], properties=item["properties"], associations=[]
                )
                for item in inputs
            ]
        )
        return self.batch(
            f"creating {len(inputs)} contacts",
            lambda client, **raw: client.crm.contacts.batch_api.create_with_http_info(
                batch_input_simple_public_object_batch_input_for_create=body, _request_timeout=self.timeout_s, **raw
            ),
        )

    def update_contacts(self, inputs: list[dict]) -> UpsertAnswer:
        """Update contacts by HubSpot id ({"id", "properties"} each)."""
        body = BatchInputSimplePublicObjectBatchInput(
            inputs=[SimplePublicObjectBatchInput(id=item["id"], properties=item["properties"]) for item in inputs]
        )
        return self.batch(
            f"updating {len(inputs)} contacts",
            lambda client, **raw: client.crm.contacts.batch_api.update_with_http_info(
                batch_input_simple_public_object_batch_input=body, _request_timeout=self.timeout_s, **raw
            ),
        )

    def read_contacts_by_email(self, emails: list[str], properties: list[str]) -> UpsertAnswer:
        """The contacts these emails name (as primary or secondary emails), with `properties`;
        HubSpot leaves out the emails no contact has (a 207's errors name them)."""
        body = BatchReadInputSimplePublicObjectId(
            id_property="email",
            inputs=[SimplePublicObjectId(id=email) for email in emails],
            properties=properties,
            properties_with_history=[],
        )
        return self.batch(
            f"looking up {len(emails)} contacts by email",
            lambda client, **raw: client.crm.contacts.batch_api.read_with_http_info(
                batch_read_input_simple_public_object_id=body, _request_timeout=self.timeout_s, **raw
            ),
        )

    def archive_contacts(self, ids: list[str]) -> None:
        """Archive (HubSpot's soft delete: restorable from the recycle bin) contacts by id; 204."""
        body = BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=contact_id) for contact_id in ids])
        self.call(
            f"archiving {len(ids)} contacts",
            lambda client: client.crm.contacts.batch_api.archive_with_http_info(
                batch_input_simple_public_object_id=body, _request_timeout=self.timeout_s
            ),
        )

    def contact_properties(self) -> dict[str, PropertyDefinition]:
        response = self.call(
            "listing contact properties",
            lambda client: client.crm.properties.core_api.get_all_with_http_info(
                "contacts", _request_timeout=self.timeout_s
            ),
        )
        return {prop.name: PropertyDefinition.from_api(prop) for prop in response.results}

    def create_contact_property(self, name: str, label: str, kind: str) -> PropertyDefinition:
        """A custom property of type `kind` (not enumeration: its options are the account's to choose)."""
        # HubSpot's bool properties are two-option checkboxes.
        options = (
            [
                Option(label="Yes", value="true", display_order=0, hidden=False),
                Option(label="No", value="false", display_order=1, hidden=False),
            ]
            if kind == "bool"
            else None
        )
        prop = PropertyCreate(
            name=name,
            label=label,
            type=kind,
            field_type=CREATED_FIELD_TYPES[kind],
            group_name="contactinformation",
            options=options,
        )
        created = self.call(
            f"creating contact property {name}",
            lambda client: client.crm.properties.core_api.create_with_http_info(
                "contacts", property_create=prop, _request_timeout=self.timeout_s
            ),
        )
        return PropertyDefinition.from_api(created)
