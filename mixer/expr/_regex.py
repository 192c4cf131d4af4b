"""RE2 patterns, matched in time linear in the text: Go's regexp dialect on Google's RE2 engine.

Mixer evaluated ``matches`` (and the list adapter its REGEX entries) with Go's regexp, an RE2
engine. RE2 has no backtracking, so no pattern, however nested its quantifiers, costs more than
linear time in the text, and the constructs that would need backtracking (backreferences,
lookaround, possessive and atomic groups) are refused when the pattern is compiled.

The ``re2`` module's own ``compile`` keeps every pattern it has seen in an LRU cache bounded only by
count (each entry may hold up to its memory budget, 8 MiB by default), so patterns are compiled here
through the engine object directly: a config pattern lives as long as the rule or list holding it,
and patterns a caller supplies go through :class:`PatternCache`, bounded in bytes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

import re2

from mixer.cache import ByteLRU

_ENGINE: Final[Any] = re2._re2.RE2
_UNANCHORED: Final[Any] = _ENGINE.Anchor.UNANCHORED
_NO_MATCH: Final = (-1, -1)

#: RE2's own default memory budget per pattern (program and DFA caches).
CONFIG_MAX_MEM: Final = 8 << 20
#: The budget of a pattern taken from a request: enough for any sane header-sized pattern, small
#: enough that the cache of them stays small. A pattern whose program needs more is refused.
REQUEST_MAX_MEM: Final = 256 << 10
#: What the cache of request-supplied patterns may hold, in bytes charged per entry.
REQUEST_CACHE_BYTES: Final = 16 << 20

# RE2 explains refusals in its own terms; these say which Perl feature the pattern needed.
_HINTS: Final = (
    ("invalid perl operator: (?=", "lookaround assertions are not supported by RE2"),
    ("invalid perl operator: (?!", "lookaround assertions are not supported by RE2"),
    ("invalid perl operator: (?<=", "lookaround assertions are not supported by RE2"),
    ("invalid perl operator: (?<!", "lookaround assertions are not supported by RE2"),
    ("invalid perl operator: (?>", "atomic groups are not supported by RE2"),
    ("invalid perl operator: (?(", "conditional groups are not supported by RE2"),
    ("bad repetition operator: ++", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: *+", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: ?+", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: }+", "possessive quantifiers are not supported by RE2"),
)


class RegexError(ValueError):
    """The pattern is not valid RE2 (Go regexp) syntax, or needs more memory than its budget."""


def _options(max_mem: int) -> Any:
    options = re2.Options()
    # Refusals are reported to the caller; RE2 would also print each one to stderr.
    options.log_errors = False
    options.max_mem = max_mem
    return options


_CONFIG_OPTIONS: Final = _options(CONFIG_MAX_MEM)
_REQUEST_OPTIONS: Final = _options(REQUEST_MAX_MEM)


def _encode(text: str) -> bytes:
    # Lone surrogates (JSON "\ud800") cannot be UTF-8; passed through they are invalid bytes that
    # RE2 matches only where a pattern allows any byte, as Go treats invalid UTF-8.
    return text.encode("utf-8", "surrogatepass")


def _refuse_go_differences(pattern: str) -> None:
    """Refuse what RE2 accepts and Go's regexp does not, so a pattern means the same in both."""
    i = 0
    n = len(pattern)
    while i < n:
        if pattern[i] != "\\" or i + 1 >= n:
            i += 1
            continue
        esc = pattern[i + 1]
        if esc == "C":
            raise RegexError("\\C is not supported")
        if esc == "Q":
            end = pattern.find("\\E", i + 2)
            i = n if end < 0 else end + 2
            continue
        i += 2


@dataclass(frozen=True, slots=True, eq=False)
class Regex:
    """A compiled RE2 pattern; :meth:`search` is Go's ``regexp.MatchString`` (unanchored)."""

    pattern: str
    engine: Any
    #: Bytes charged for holding it: the pattern and the memory budget RE2 may grow into.
    cost: int

    def search(self, text: str) -> bool:
        data = _encode(text)
        spans = self.engine.Match(_UNANCHORED, data, 0, len(data))
        return bool(spans[0] != _NO_MATCH)


def _compile(pattern: str, options: Any, max_mem: int) -> Regex:
    _refuse_go_differences(pattern)
    encoded = _encode(pattern)
    engine = _ENGINE(encoded, options)
    if not engine.ok():
        message = engine.error().decode("utf-8", "replace")
        for prefix, hint in _HINTS:
            if message.startswith(prefix):
                raise RegexError(hint)
        if message == "invalid perl operator: (?P" and "(?P=" in pattern:
            raise RegexError("backreferences are not supported by RE2")
        if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
            raise RegexError(f"backreference {message[-2:]} is not supported by RE2")
        raise RegexError(message)
    return Regex(pattern, engine, len(encoded) + max_mem)


def compile_re2(pattern: str) -> Regex:
    """``pattern`` compiled with RE2's default budget: for patterns from configuration.

    :raises RegexError: the pattern is not valid Go regexp syntax; the message says why.
    """
    return _compile(pattern, _CONFIG_OPTIONS, CONFIG_MAX_MEM)


@dataclass(frozen=True, slots=True)
class PatternCacheStats:
    entries: int
    bytes: int
    capacity_bytes: int
    evictions: int
    refused: int


class PatternCache:
    """Compiled patterns that callers supplied, least recently used first out, bounded in bytes.

    A pattern RE2 refuses is counted (:attr:`refused`) and matches nothing: a caller's bad pattern is
    the caller's problem, not an error of the configured rule. Each entry is charged its pattern
    plus the memory budget RE2 may use for it.
    """

    def __init__(self, capacity_bytes: int = REQUEST_CACHE_BYTES, max_mem: int = REQUEST_MAX_MEM) -> None:
        self._max_mem = max_mem
        self._options = _options(max_mem)
        self._entries: ByteLRU[str, Regex] = ByteLRU(
            capacity_bytes, size=lambda _pattern, regex: regex.cost, name="expr.request_patterns"
        )
        # Expressions may be evaluated off the event loop (tests, tools); the LRU itself is not
        # thread-safe.
        self._lock = threading.Lock()
        self.refused = 0

    @property
    def evictions(self) -> int:
        return self._entries.evictions

    def search(self, pattern: str, text: str) -> bool:
        """Whether ``pattern`` (RE2) is found in ``text``; ``False`` when RE2 refuses the pattern."""
        with self._lock:
            regex = self._entries.get(pattern)
        if regex is None:
            try:
                regex = _compile(pattern, self._options, self._max_mem)
            except RegexError:
                with self._lock:
                    self.refused += 1
                return False
            with self._lock:
                self._entries.put(pattern, regex)
        return regex.search(text)

    def stats(self) -> PatternCacheStats:
        with self._lock:
            held = self._entries.stats()
        return PatternCacheStats(held.entries, held.bytes, held.max_bytes, held.evictions, self.refused)


#: The process's cache of patterns taken from requests (``request.headers["x"].matches(...)``).
REQUEST_PATTERNS: Final = PatternCache()


def request_pattern_stats() -> PatternCacheStats:
    """The counts of the process's cache of request-supplied patterns (for the server's metrics)."""
    return REQUEST_PATTERNS.stats()
