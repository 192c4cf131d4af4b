"""What a Delivery knows about its backend's health: failing, given up on (circuit open), answering."""

from __future__ import annotations

import asyncio
import logging
import random

from mixer.delivery._backoff import Backoff
from mixer.delivery._options import DeliveryOptions

__all__ = ["Circuit"]


class Circuit:
    """``degraded``: a send failed and none has succeeded since, so records wait on disk.
    ``is_open``: a batch ran out of retries; only one probe batch at a time is sent, after a
    growing pause, until the backend answers. ``answered_once``: it answered cleanly at least once.
    """

    __slots__ = ("_log", "_max_elapsed", "_probe_backoff", "_wake", "answered_once", "degraded", "is_open")

    def __init__(
        self, options: DeliveryOptions, rng: random.Random, logger: logging.Logger, wake: asyncio.Event
    ) -> None:
        self._log = logger
        self._wake = wake
        self._max_elapsed = options.retry_max_elapsed.total_seconds()
        self._probe_backoff = Backoff.from_options(options, rng)
        self.degraded = False
        self.is_open = False
        self.answered_once = False

    def open(self) -> None:
        if self.is_open:
            return
        self.is_open = True
        self._probe_backoff.reset()
        self._log.warning(
            "backend unreachable for %.3gs; spooling and probing with one batch at a time", self._max_elapsed
        )
        self._wake.set()

    def next_probe(self) -> float:
        """Seconds to wait before the next probe batch."""
        return self._probe_backoff.next()

    def answered(self, *, clean: bool) -> None:
        """The backend answered: it is up. ``clean``: nothing in the batch has to be retried."""
        if self.is_open:
            self.is_open = False
            self._probe_backoff.reset()
            self._log.info("backend answers again; delivery resumed")
            self._wake.set()
        if clean:
            self.degraded = False
            self.answered_once = True
