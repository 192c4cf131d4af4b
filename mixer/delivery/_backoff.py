"""Waits between retries: exponential growth, a cap, multiplicative jitter, a reset on success."""

from __future__ import annotations

import random

from mixer.delivery._options import DeliveryOptions

__all__ = ["Backoff"]


class Backoff:
    """Exponential intervals with multiplicative jitter: ``interval * U(1 - jitter, 1 + jitter)``.

    The first :meth:`next` is ``initial``; each one after it is ``multiplier`` times the one
    before, never more than ``maximum`` (the cap applies before the jitter, so a wait is at most
    ``maximum * (1 + jitter)``). :meth:`reset` starts again from ``initial``, for when the thing
    retried has succeeded. Jitter spreads the retries of many clients that failed together, so
    they do not hit the backend again at the same moment; with ``jitter=0`` the waits are exact
    and ``rng`` is never used.

    Not thread-safe: one owner calls it (each Delivery batch has its own).
    """

    __slots__ = ("_initial", "_interval", "_jitter", "_max", "_multiplier", "_rng")

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        """Seconds ``initial`` and ``maximum`` (both over 0), ``multiplier`` at least 1, ``jitter`` in [0, 1].

        :raises ValueError: a parameter is out of its range.
        """
        if initial <= 0 or maximum <= 0:
            raise ValueError(f"backoff intervals must be positive, got {initial} and {maximum}")
        if multiplier < 1:
            raise ValueError(f"backoff multiplier must be at least 1, got {multiplier}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, got {jitter}")
        self._initial = initial
        self._max = maximum
        self._multiplier = multiplier
        self._jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._interval = initial

    @classmethod
    def from_options(cls, options: DeliveryOptions, rng: random.Random | None = None) -> Backoff:
        """The backoff the ``retry_*`` options of ``options`` describe."""
        return cls(
            options.retry_initial_interval.total_seconds(),
            options.retry_max_interval.total_seconds(),
            multiplier=options.retry_multiplier,
            jitter=options.retry_jitter,
            rng=rng,
        )

    def reset(self) -> None:
        """Start again from the initial interval."""
        self._interval = self._initial

    def next(self) -> float:
        """The next wait in seconds; the interval grows for the call after."""
        interval = min(self._interval, self._max)
        self._interval = min(self._interval * self._multiplier, self._max)
        if self._jitter == 0:
            return interval
        return interval * self._rng.uniform(1.0 - self._jitter, 1.0 + self._jitter)
