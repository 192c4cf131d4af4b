"""The values the runtime hands back: plain Python data that the wire layers encode."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from mixer.adapter import HandlerOverloaded
from mixer.status import OK, Code, Status


class RuntimeBuildError(Exception):
    """A configuration cannot become a runtime: a handler fails to build or start, a rule names
    something that does not exist, or a handler lacks the interface a template variety needs."""


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What one Report call did.

    ``errors`` holds the first messages (rule match errors, instance build errors, handler
    failures); the counts are complete. :attr:`status` is the answer Mixer gave: UNAVAILABLE when
    a handler was overloaded, UNKNOWN with the reasons when an instance failed to build or a handler
    failed, else OK. Match errors only count (the rule is treated as not matching).

    ``pending`` are the handlers that accepted their batch on condition that it becomes durable
    (committed to their spool), with what completes when it is: a caller that answers the Report
    uses :meth:`durable_status`, which waits for them, instead of :attr:`status`.
    """

    records: int
    instances: int = 0
    overloaded: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    match_errors: int = 0
    instance_errors: int = 0
    errors: tuple[str, ...] = ()
    pending: tuple[tuple[str, Awaitable[None]], ...] = ()

    @property
    def status(self) -> Status:
        if self.overloaded:
            return Status(Code.UNAVAILABLE, "handler overloaded: " + ", ".join(self.overloaded))
        if self.failed or self.instance_errors:
            return Status(Code.UNKNOWN, "; ".join(self.errors) or "report failed")
        return OK

    async def durable_status(self) -> Status:
        """:attr:`status` once every pending batch is durable; UNAVAILABLE for those that failed.

        The event loop keeps running meanwhile (the spool writes happen on their own threads).
        Cancelling the caller does not cancel the writes, which other Reports may share.
        """
        if not self.pending:
            return self.status
        not_durable: list[str] = []
        for name, commit in self.pending:
            try:
                await asyncio.shield(commit)
            except HandlerOverloaded:
                not_durable.append(name)
        if not_durable and not self.overloaded:
            return Status(Code.UNAVAILABLE, "handler overloaded: " + ", ".join(not_durable))
        return self.status


@dataclass(frozen=True, slots=True)
class RuntimeDelta:
    """How a runtime's handlers relate to the runtime it was built from (by fully qualified name)."""

    new: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()


@dataclass(slots=True)
class RuntimeStats:
    """Plain counters for the server's self-metrics.

    One object is carried from a runtime to the runtime built from it, so the counts only grow
    across reloads. The per-handler dicts are keyed by configured handler names, so they are
    bounded by the configurations the server has run.
    """

    check_calls: int = 0
    quota_calls: int = 0
    report_calls: int = 0
    report_records: int = 0
    report_instances: int = 0
    match_errors: int = 0
    instance_errors: int = 0
    header_errors: int = 0
    #: The precondition cache (see :mod:`mixer.runtime._check_cache`): lookups answered from it
    #: and not, entries evicted to stay within its bytes, entries dropped before that (expired,
    #: used up, too large, or invalidated by a reload or a handler), and the bytes it holds.
    check_cache_hits: int = 0
    check_cache_misses: int = 0
    check_cache_evictions: int = 0
    check_cache_drops: int = 0
    check_cache_bytes: int = 0
    handler_errors: dict[str, int] = field(default_factory=dict)
    handler_timeouts: dict[str, int] = field(default_factory=dict)
    overloaded: dict[str, int] = field(default_factory=dict)

    def count_handler_error(self, handler: str) -> None:
        self.handler_errors[handler] = self.handler_errors.get(handler, 0) + 1

    def count_handler_timeout(self, handler: str) -> None:
        self.handler_timeouts[handler] = self.handler_timeouts.get(handler, 0) + 1

    def count_overloaded(self, handler: str) -> None:
        self.overloaded[handler] = self.overloaded.get(handler, 0) + 1
