"""A client-side limiter that keeps HubSpot requests under the account's rolling-window limit.

Every request holds a place in the window from before it is sent until a window after its reply
arrives. The server counts a request when it arrives, which is somewhere between the two, so
counting from the reply can never let the server see more than the limit, however late a busy
client thread sends or a slow network delivers; a small margin covers clock granularity. The
limiter learns from HubSpot's headers (a lower `X-HubSpot-RateLimit-Max`, `Remaining` near
zero) and a 429 pauses every sender, by `Retry-After` when given, else for a whole window.

The account's window is shared by every step that calls HubSpot (contacts, companies,
associations), each with a limiter of its own, maybe in a process of its own: `persist_to` makes
them one window through a small file in the data dir (see there).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from etl_assets import files, settings

SHARED_WINDOW_FILE = "hubspot_rate_window"


def shared_window_path() -> Path:
    """The file every HubSpot step's limiter shares its recent replies through."""
    return settings.data_dir() / SHARED_WINDOW_FILE


class DailyLimitReached(Exception):
    """HubSpot's DAILY limit is spent: stop cleanly, the rest waits for tomorrow's run."""


class RollingWindowLimiter:
    MARGIN_STEP_S = 0.5
    POLL_S = 0.05  # how often to look again while every place is held by a request in flight

    def __init__(
        self,
        max_requests: int = settings.default_value(settings.HUBSPOT_RATE_LIMIT),
        interval_s: float = 10.0,
        margin_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ):
        if max_requests < 1 or interval_s <= 0:
            raise ValueError("the rate limit needs max_requests >= 1 and interval_s > 0")
        self.max_requests = max_requests
        self.window_s = interval_s + margin_s
        self._max_window_s = interval_s + max(margin_s, 2.0)
        self._clock, self._sleep, self._wall = clock, sleep, wall
        self._ledger: Path | None = None
        self._replies: collections.deque[float] = collections.deque()  # reply times, oldest first
        self._in_flight = 0
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def _wait_needed(self, now: float) -> float:
        while self._replies and now - self._replies[0] >= self.window_s:
            self._replies.popleft()
        wait = max(self._paused_until - now, 0.0)
        held = self._in_flight + len(self._replies)
        if held >= self.max_requests:
            freeing = held - self.max_requests  # the reply whose leaving the window frees a place
            if freeing < len(self._replies):
                wait = max(wait, self._replies[freeing] + self.window_s - now)
            else:
                wait = max(wait, self.POLL_S)
        return wait

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request's place: block until it fits, keep it until a window after the reply."""
        while True:
            with self._lock:
                wait = self._wait_needed(self._clock())
                if wait <= 0:
                    self._in_flight += 1
                    break
            self._sleep(min(wait, 1.0))
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._replies.append(self._clock())
                if self._ledger is not None:
                    with open(self._ledger, "a", encoding="ascii") as ledger:  # made 0600 by persist_to
                        ledger.write(f"{self._wall():.6f}\n")

    def persist_to(self, path: Path) -> None:
        """Share the window with the HubSpot steps before and after this one, through `path`.

        Takes in the replies `path` records from the last window (a step that starts right after
        another waits for what that one spent), then appends each reply's time to it. Times are
        wall-clock, the one clock separate processes share. The steps that call HubSpot hold one
        pool (`etl_assets_hubspot_sync`, one step at a time: dagster.yaml), so one writes at a time.
        Attaching twice to the same file is a no-op.
        """
        with self._lock:
            if self._ledger == path:
                return
            now, wall = self._clock(), self._wall()
            try:
                lines = path.read_text(encoding="ascii").split()
            except (FileNotFoundError, UnicodeDecodeError):
                lines = []
            recent = sorted(
                t for t in (_as_float(line) for line in lines) if t is not None and wall - t < self.window_s
            )
            self._replies = collections.deque(sorted([*self._replies, *(now - (wall - t) for t in recent)]))
            with files.open_private(path, "w", encoding="ascii") as ledger:  # kept short: the last window only
                ledger.writelines(f"{t:.6f}\n" for t in recent)
            self._ledger = path

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
            if remaining == 0 and self._replies:
                # The server's window is full: nothing more until the oldest request we count leaves
                # it (waiting for the newest would idle a whole window after every burst).
                self._paused_until = max(self._paused_until, self._replies[0] + self.window_s)

    def back_off(self, retry_after_s: float | None) -> float:
        """Pause every sender after a 429; returns the pause in seconds.

        A 429 also widens the margin a little: the server counted more than we did (another
        integration sharing the app's limit, or a server whose window is longer than it says).
        """
        pause = retry_after_s if retry_after_s is not None else self.window_s
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + pause)
            self.window_s = min(self.window_s + self.MARGIN_STEP_S, self._max_window_s)
        return pause


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:  # a line cut short by a crash
        return None


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
