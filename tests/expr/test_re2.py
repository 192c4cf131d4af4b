"""Regular expressions from config and from callers cost time linear in the text (RE2)."""

from __future__ import annotations

import time

import pytest

from adapters.list._lists import EntryType, build_list
from mixer.attributes import ISTIO_MANIFEST, AttributeBag
from mixer.expr import compile, request_pattern_stats
from mixer.expr._regex import PatternCache

# Nested and overlapping quantifiers that make a backtracking engine take exponential time on a
# near miss: ~28 characters already held a backtracking matcher for seconds.
PATHOLOGICAL = ["^(a+)+$", "^(a|aa)+$", "(a*)*b", "^(\\w+\\s?)*$", "^(a|a?)+$", "(.*a){12}x"]
NEAR_MISS = "a" * 100_000 + "!"
#: Generous for a loaded machine: a linear scan of 100k characters takes about a millisecond.
BOUND = 1.0

MANIFEST = ISTIO_MANIFEST


def _timed(run: object) -> tuple[object, float]:
    assert callable(run)
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


@pytest.mark.parametrize("pattern", PATHOLOGICAL)
def test_config_pattern_is_linear(pattern: str) -> None:
    literal = pattern.replace("\\", "\\\\")
    expr = compile(f'"{literal}".matches(request.path)', MANIFEST)
    bag = AttributeBag({"request.path": NEAR_MISS})
    result, seconds = _timed(lambda: expr.evaluate(bag))
    assert result is False
    assert seconds < BOUND, f"{pattern} took {seconds:.3f}s on {len(NEAR_MISS)} characters"


@pytest.mark.parametrize("pattern", PATHOLOGICAL)
def test_request_pattern_is_linear(pattern: str) -> None:
    expr = compile('request.headers["x"].matches(request.path)', MANIFEST)
    bag = AttributeBag({"request.path": NEAR_MISS, "request.headers": {"x": pattern}})
    result, seconds = _timed(lambda: expr.evaluate(bag))
    assert result is False
    assert seconds < BOUND, f"{pattern} took {seconds:.3f}s on {len(NEAR_MISS)} characters"


@pytest.mark.parametrize("pattern", PATHOLOGICAL)
def test_list_entry_is_linear(pattern: str) -> None:
    for entries in ([pattern], [pattern, "^/never$"]):
        contains = build_list(EntryType.REGEX, entries).contains
        result, seconds = _timed(lambda: contains(NEAR_MISS))  # noqa: B023 (called at once)
        assert result is False
        assert seconds < BOUND, f"{entries} took {seconds:.3f}s on {len(NEAR_MISS)} characters"


def test_semantics_are_go_regexp() -> None:
    expr = compile('request.headers["x"].matches(request.path)', MANIFEST)

    def matches(pattern: str, path: str) -> object:
        return expr.evaluate(AttributeBag({"request.path": path, "request.headers": {"x": pattern}}))

    # Unanchored search; "$" is the end of the text only; "\d" is ASCII; "." is a whole character.
    assert matches("api/v[0-9]+", "/api/v2/users") is True
    assert matches("a$", "a\n") is False
    assert matches("\\d", "\u0663") is False
    assert matches("^.$", "\u00e9") is True
    assert matches("(?i)straße", "STRASSE") is False
    assert matches("(?i)k", "\u212a") is True


@pytest.mark.parametrize("pattern", ["(a)\\1", "a(?=b)", "(?<!a)b", "a++", "[", "\\C", "x{1001}"])
def test_request_pattern_re2_refuses_is_false_and_counted(pattern: str) -> None:
    expr = compile('request.headers["x"].matches(request.path)', MANIFEST)
    before = request_pattern_stats().refused
    bag = AttributeBag({"request.path": "aab", "request.headers": {"x": pattern}})
    assert expr.evaluate(bag) is False
    assert request_pattern_stats().refused == before + 1


def test_request_pattern_cache_is_bounded_in_bytes() -> None:
    cache = PatternCache(capacity_bytes=10 * 4096, max_mem=4096)
    for i in range(50):
        assert cache.search(f"^/p{i}/", f"/p{i}/x") is True
        stats = cache.stats()
        assert stats.bytes <= stats.capacity_bytes
    stats = cache.stats()
    assert stats.entries < 10
    assert stats.evictions == 50 - stats.entries
    # The most recently used patterns are the ones kept.
    assert cache.search("^/p49/", "/p49/") is True
    assert cache.stats().evictions == stats.evictions


def test_request_pattern_over_its_memory_budget_is_refused() -> None:
    cache = PatternCache(capacity_bytes=1 << 20, max_mem=64 << 10)
    # Ten thousand instructions do not fit in 64 KiB.
    assert cache.search("[a-z]{1000}" * 10, "a" * 10_000) is False
    assert cache.stats().refused == 1
    assert cache.stats().entries == 0
