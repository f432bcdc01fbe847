"""A 401 mid-sync: the token is read again once, and batches in flight go on with a rotated one."""

import concurrent.futures as futures
import logging
import time

import pytest

from etl_assets.hubspot.client import HubSpotApi, HubSpotApiError
from etl_assets.hubspot.ratelimit import RollingWindowLimiter
from etl_assets.retrying import RetrySettings
from etl_assets_tests.servers.hubspot_server import UPSERT_PATH, HubSpotServer

LOG = logging.getLogger("test_token_renewal")
RETRY = RetrySettings(attempts=3, max_seconds=30, initial_delay=0.05, max_delay=0.5)


class TokenSource:
    """Stands in for the secrets backend; counts the reads past the cache."""

    def __init__(self, value: str):
        self.value, self.reads = value, 0

    def __call__(self) -> str:
        self.reads += 1
        return self.value


def api_for(server: HubSpotServer, token: str, source: TokenSource) -> HubSpotApi:
    limiter = RollingWindowLimiter(max_requests=100, interval_s=10)
    return HubSpotApi(token, server.url, limiter, RETRY, LOG, reread_token=source)


def upsert(api: HubSpotApi, i: int) -> list[dict]:
    return api.upsert_contacts([{"id": f"p{i}@example.com", "properties": {"firstname": f"P{i}"}}])


def test_concurrent_401s_read_the_token_once_and_every_batch_goes_on_with_the_new_one():
    with HubSpotServer(latency=0.2) as server:  # the four requests are in flight together
        old = server.token
        server.rotate_token("rotated-token")
        source = TokenSource("rotated-token")
        api = api_for(server, old, source)
        with futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: upsert(api, i), range(4)))
        assert [len(answer.results) for answer in results] == [1, 1, 1, 1]
        assert source.reads == 1
        assert (server.count_status(401), server.count_status(200)) == (4, 4)
        assert len(server.contacts_snapshot()) == 4


@pytest.mark.parametrize(
    ("read_again", "requests"),
    [
        ("test-token", 1),  # the secret still holds the rejected token: no second request
        ("stale-token", 2),  # it changed, but the new one is rejected too
    ],
)
def test_a_token_unchanged_or_rejected_again_fails_with_the_401(read_again, requests):
    with HubSpotServer() as server:
        old = server.token
        server.rotate_token("current-token")
        source = TokenSource(read_again)
        with pytest.raises(HubSpotApiError) as caught:
            upsert(api_for(server, old, source), 1)
        assert caught.value.error.status == 401
        assert source.reads == 1
        assert server.count_requests(UPSERT_PATH) == server.count_status(401) == requests


def test_rotate_and_expire_later_keeps_the_old_token_working_until_it_expires():
    with HubSpotServer() as server:
        api = api_for(server, server.token, source := TokenSource("new-token"))
        server.rotate_token("new-token", expire_old_after_s=0.5)
        upsert(api, 1)
        assert (source.reads, server.count_status(401)) == (0, 0)
        time.sleep(0.5)
        upsert(api, 2)
        assert (source.reads, server.count_status(401), server.count_status(200)) == (1, 1, 2)
