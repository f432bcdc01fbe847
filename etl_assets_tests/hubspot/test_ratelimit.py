import pytest

from etl_assets.hubspot.ratelimit import RollingWindowLimiter

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def send(rate: RollingWindowLimiter, clock: FakeClock | None = None, takes_s: float = 0.0) -> None:
    """One request through the limiter, its reply `takes_s` after it was let through."""
    with rate.slot():
        if clock is not None:
            clock.now += takes_s


def limiter(clock: FakeClock, **kwargs) -> RollingWindowLimiter:
    return RollingWindowLimiter(
        clock=clock, sleep=clock.sleep, **{"max_requests": 3, "interval_s": 10, "margin_s": 0.5, **kwargs}
    )


def test_never_more_than_the_limit_in_any_window():
    clock = FakeClock()
    rate = limiter(clock)
    sent = []
    for _ in range(10):
        with rate.slot():
            sent.append(clock.now)
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + 10.5) <= 3
    assert sent[:3] == [0.0, 0.0, 0.0]
    assert sent[3] == 10.5


def test_adopts_a_lower_limit_from_headers_and_pauses_when_none_remain():
    clock = FakeClock()
    rate = limiter(clock, max_requests=100)
    rate.observe({"X-HubSpot-RateLimit-Max": "2", "X-HubSpot-RateLimit-Remaining": "1"})
    assert rate.max_requests == 2
    send(rate)
    rate.observe({"x-hubspot-ratelimit-remaining": "0"})
    send(rate)
    assert clock.now == 10.5


def test_a_429_pauses_every_sender_for_retry_after_or_a_whole_window():
    clock = FakeClock()
    rate = limiter(clock, max_requests=100)
    assert rate.back_off(2.0) == 2.0
    send(rate)
    assert clock.now == 2.0
    assert rate.back_off(None) == 11.0  # the first 429 widened the window by 0.5 s
    send(rate)
    assert clock.now == 13.0
    for _ in range(10):
        rate.back_off(0)
    assert rate.window_s == 12.0  # widening stops at interval + 2 s


def test_a_full_server_window_waits_for_the_oldest_request_not_the_newest():
    clock = FakeClock()
    rate = limiter(clock, max_requests=100)
    send(rate)
    clock.now = 5.0
    send(rate)
    rate.observe({"X-HubSpot-RateLimit-Remaining": "0"})
    send(rate)
    assert clock.now == 10.5


def test_a_slow_reply_holds_its_place_until_a_window_after_it_arrives():
    # The server counts the request somewhere between send and reply: only a window after the
    # reply is its place certainly free, however long the request took.
    clock = FakeClock()
    rate = limiter(clock, max_requests=2)
    send(rate, clock, takes_s=3.0)  # let through at 0, reply at 3
    send(rate)  # at 3, reply at 3
    started = clock.now
    send(rate)
    assert (started, clock.now) == (3.0, 13.5)  # the first reply (3) plus the 10.5 s window
