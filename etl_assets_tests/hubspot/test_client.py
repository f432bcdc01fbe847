"""HubSpotApi's connections to a real HTTP server: opened once, kept for the requests after."""

import concurrent.futures as futures
import logging
import time

from etl_assets.hubspot.client import HubSpotApi
from etl_assets.hubspot.ratelimit import RollingWindowLimiter
from etl_assets.resources.hubspot import HubSpotResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings
from etl_assets_tests.servers.hubspot_server import HubSpotServer

LOG = logging.getLogger("test_client")
RETRY = RetrySettings(attempts=2, max_seconds=10, initial_delay=0.05, max_delay=0.5)


def upsert(api: HubSpotApi, i: int) -> int:
    answer = api.upsert_contacts([{"id": f"k{i}@example.com", "properties": {"firstname": f"K{i}"}}])
    return len(answer.results)


def test_requests_one_after_another_share_one_connection():
    with HubSpotServer() as server:
        api = HubSpotApi(server.token, server.url, RollingWindowLimiter(max_requests=100), RETRY, LOG)
        assert [upsert(api, i) for i in range(20)] == [1] * 20
        api.contact_properties()  # another API of the client: a pool of its own
        assert server.connections_opened == 2
        assert len(server.contacts_snapshot()) == 20


def test_a_connection_the_server_closed_while_idle_is_replaced_before_the_next_request():
    with HubSpotServer(idle_timeout=0.2) as server:
        api = HubSpotApi(server.token, server.url, RollingWindowLimiter(max_requests=100), RETRY, LOG)
        assert upsert(api, 1) == 1
        time.sleep(0.6)  # the server has closed the kept connection meanwhile
        assert upsert(api, 2) == 1
        assert (api.retried, server.connections_opened) == (0, 2)
        assert len(server.request_log) == 2  # nothing sent into the closed connection


def test_requests_in_flight_together_keep_a_connection_each(clean_env, monkeypatch):
    in_flight = 12
    with HubSpotServer(latency=0.05) as server:  # long enough for the senders to overlap
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", server.token)
        monkeypatch.setenv("HUBSPOT_API_BASE", server.url)
        api = HubSpotResource(max_in_flight=in_flight, secrets=SecretsResource()).open_api(LOG)
        with futures.ThreadPoolExecutor(in_flight) as pool:
            assert list(pool.map(lambda i: upsert(api, i), range(4 * in_flight))) == [1] * (4 * in_flight)
        assert server.connections_opened <= in_flight
        assert len(server.contacts_snapshot()) == 4 * in_flight
