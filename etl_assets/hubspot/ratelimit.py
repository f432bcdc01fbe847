"""A client-side limiter that keeps HubSpot requests under the account's rolling-window limit.

Every request takes a slot first. The window is the server's (10 s by default) plus a margin,
because the server counts arrivals and our requests arrive a little after they are sent. The
limiter learns from HubSpot's headers (a lower `X-HubSpot-RateLimit-Max`, `Remaining` near
zero) and a 429 pauses every sender, by `Retry-After` when given, else for a whole window.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Mapping


class DailyLimitReached(Exception):
    """HubSpot's DAILY limit is spent: stop cleanly, the rest waits for tomorrow's run."""


class RollingWindowLimiter:
    MARGIN_STEP_S = 0.5

    def __init__(
        self,
        max_requests: int = 100,
        interval_s: float = 10.0,
        margin_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_requests < 1 or interval_s <= 0:
            raise ValueError("the rate limit needs max_requests >= 1 and interval_s > 0")
        self.max_requests = max_requests
        self.window_s = interval_s + margin_s
        self._max_window_s = interval_s + max(margin_s, 2.0)
        self._clock, self._sleep = clock, sleep
        self._sent: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def _wait_needed(self, now: float) -> float:
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        wait = max(self._paused_until - now, 0.0)
        if len(self._sent) >= self.max_requests:
            wait = max(wait, self._sent[len(self._sent) - self.max_requests] + self.window_s - now)
        return wait

    def acquire(self) -> None:
        """Block until one more request fits in the window, then claim it."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._sent.append(now)
                    return
            self.waited_s += wait
            self._sleep(min(wait, 1.0))

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Adopt a stricter limit than configured when HubSpot reports one."""
        if not headers:
            return
        lowered = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            limit = _as_int(lowered.get("x-hubspot-ratelimit-max"))
            if limit and limit < self.max_requests:
                self.max_requests = limit
            remaining = _as_int(lowered.get("x-hubspot-ratelimit-remaining"))
            if remaining == 0 and self._sent:
                # The server's window is full: nothing more until the oldest request we count leaves
                # it (waiting for the newest would idle a whole window after every burst).
                self._paused_until = max(self._paused_until, self._sent[0] + self.window_s)

    def back_off(self, retry_after_s: float | None) -> float:
        """Pause every sender after a 429; returns the pause in seconds.

        A 429 also widens the margin a little: requests reached the server closer together than
        they left here (a slow or busy server), so the window we count in was too short.
        """
        pause = retry_after_s if retry_after_s is not None else self.window_s
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + pause)
            self.window_s = min(self.window_s + self.MARGIN_STEP_S, self._max_window_s)
        return pause


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
