from etl_assets.hubspot.ratelimit import RollingWindowLimiter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(clock: FakeClock, **kwargs) -> RollingWindowLimiter:
    return RollingWindowLimiter(clock=clock, sleep=clock.sleep, **{"max_requests": 3, "interval_s": 10, "margin_s": 0.5,
                                                                    **kwargs})


def test_never_more_than_the_limit_in_any_window():
    clock = FakeClock()
    rate = limiter(clock)
    sent = []
    for _ in range(10):
        rate.acquire()
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
    rate.acquire()
    rate.observe({"x-hubspot-ratelimit-remaining": "0"})
    rate.acquire()
    assert clock.now == 10.5


def test_a_429_pauses_every_sender_for_retry_after_or_a_whole_window():
    clock = FakeClock()
    rate = limiter(clock, max_requests=100)
    assert rate.back_off(2.0) == 2.0
    rate.acquire()
    assert clock.now == 2.0
    assert rate.back_off(None) == 11.0  # the first 429 widened the window by 0.5 s
    rate.acquire()
    assert clock.now == 13.0
    for _ in range(10):
        rate.back_off(0)
    assert rate.window_s == 12.0  # widening stops at interval + 2 s


def test_a_full_server_window_waits_for_the_oldest_request_not_the_newest():
    clock = FakeClock()
    rate = limiter(clock, max_requests=100)
    rate.acquire()
    clock.now = 5.0
    rate.acquire()
    rate.observe({"X-HubSpot-RateLimit-Remaining": "0"})
    rate.acquire()
    assert clock.now == 10.5
