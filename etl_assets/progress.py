"""Steady progress lines for long steps: done/total, rate and ETA, at most every few seconds."""

from __future__ import annotations

import logging
import time


class Progress:
    def __init__(self, log: logging.Logger, what: str, unit: str, total: int | None, every_s: float = 5.0):
        self._log, self._what, self._unit, self.total = log, what, unit, total
        self._every_s = every_s
        self.started = time.monotonic()
        self._last_report = self.started
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last_report >= self._every_s:
            self._last_report = now
            self._log.info(self.line())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        text = f"{self._what}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self._unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += f" {self._unit}"
        text += f", {self.rate:,.0f} {self._unit}/s"
        if self.total and self.rate > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / self.rate:.0f}s"
        return text
