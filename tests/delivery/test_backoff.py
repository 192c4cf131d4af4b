"""Backoff: exponential waits, the cap, jitter bounds, reset, and its parameters' ranges."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from mixer.delivery import Backoff, DeliveryOptions


def test_waits_grow_by_the_multiplier_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0, multiplier=2.0)
    waits = [backoff.next() for _ in range(7)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_reset_starts_again_from_the_initial_wait() -> None:
    backoff = Backoff(0.5, 30.0, multiplier=3.0)
    assert [backoff.next() for _ in range(3)] == pytest.approx([0.5, 1.5, 4.5])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.5)


def test_jitter_stays_within_its_bounds_around_the_capped_interval() -> None:
    backoff = Backoff(1.0, 4.0, multiplier=2.0, jitter=0.25, rng=random.Random(7))
    nominal = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    waits = [backoff.next() for _ in nominal]
    for waited, expected in zip(waits, nominal, strict=True):
        assert expected * 0.75 <= waited <= expected * 1.25
    assert len(set(waits)) == len(waits), "jitter should make every wait different"


def test_the_same_seed_gives_the_same_waits() -> None:
    first = Backoff(0.1, 5.0, jitter=0.5, rng=random.Random(42))
    second = Backoff(0.1, 5.0, jitter=0.5, rng=random.Random(42))
    assert [first.next() for _ in range(5)] == [second.next() for _ in range(5)]


def test_from_options_follows_the_retry_options() -> None:
    options = DeliveryOptions(
        retry_initial_interval=timedelta(milliseconds=200),
        retry_max_interval=timedelta(milliseconds=500),
        retry_multiplier=1.5,
        retry_jitter=0.0,
    )
    backoff = Backoff.from_options(options)
    assert [backoff.next() for _ in range(4)] == pytest.approx([0.2, 0.3, 0.45, 0.5])


@pytest.mark.parametrize(
    ("initial", "maximum", "multiplier", "jitter"),
    [(0.0, 1.0, 2.0, 0.0), (1.0, -1.0, 2.0, 0.0), (1.0, 2.0, 0.5, 0.0), (1.0, 2.0, 2.0, 1.5)],
)
def test_out_of_range_parameters_are_refused(
    initial: float, maximum: float, multiplier: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, maximum, multiplier=multiplier, jitter=jitter)
