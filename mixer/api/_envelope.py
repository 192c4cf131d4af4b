"""The one envelope around every API call, whatever its transport.

:class:`Envelope` owns what every servicer used to write around its work: admission (the
process-wide limit on calls in flight), the in-flight counts (the process's and the API's own,
``mixer_requests_in_flight{api}``), the runtime lease (:class:`Lease`: taken from the holder when
the call first needs it and handed back when it ends, so that a reload waits for it), the call's
metrics (``mixer_requests_total{api, method, code}``, its latency, ``mixer_decode_errors_total``)
and the mapping of what went wrong to a status:

- :class:`CallFailure` raised by the work: that status (a decode error when it says so);
- a request the codec refused (:data:`DECODE_ERRORS`): its code, counted as a decode error;
- anything else: INTERNAL, logged with its traceback.

What the caller then receives is the transport's business, its :class:`Faults`: a gRPC servicer
aborts with the status (:class:`mixer.api._grpc.GrpcFaults`), the HTTP endpoints answer with a JSON
error, the syslog input has no caller and only counts.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import Token
from time import perf_counter
from typing import TYPE_CHECKING, ClassVar, Concatenate, Final, Generic, ParamSpec, TypeVar

from mixer import logcontext
from mixer.api._common import Admission
from mixer.status import Code
from mixer.wire import GlobalDictionaryMismatch, WireDecodeError

if TYPE_CHECKING:
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import MethodMetrics, ServerMetrics
    from mixer.runtime import Runtime

__all__ = [
    "DECODE_ERRORS",
    "INTERNAL_FAILURE",
    "NOT_READY",
    "OVERLOADED_FAILURE",
    "CallFailure",
    "Envelope",
    "Faults",
    "Lease",
    "RequestError",
    "Unanswered",
]


class CallFailure(Exception):
    """Ends a call with a status instead of an answer.

    ``decode_error``: the request itself was malformed (counted in ``mixer_decode_errors_total``).
    """

    def __init__(self, code: Code, message: str, *, decode_error: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.decode_error = decode_error


class RequestError(ValueError):
    """A request that cannot be used: malformed, or over a decoding limit. Answered INVALID_ARGUMENT."""

    code: ClassVar[Code] = Code.INVALID_ARGUMENT


#: What the codecs raise for a request they refuse; each carries the code it is answered with.
DECODE_ERRORS: Final = (RequestError, WireDecodeError, GlobalDictionaryMismatch)

OVERLOADED_FAILURE: Final = CallFailure(
    Code.UNAVAILABLE, "overloaded: too many requests in flight (see --max-concurrent-requests)"
)
INTERNAL_FAILURE: Final = CallFailure(Code.INTERNAL, "internal error; the server logged the details")
#: A fresh failure for every call that finds no runtime, raised from the lease.
NOT_READY: Final = (Code.UNAVAILABLE, "not ready: no config has loaded yet")

Ctx = TypeVar("Ctx")
Answer = TypeVar("Answer")
P = ParamSpec("P")


class Faults(abc.ABC, Generic[Ctx, Answer]):
    """What one transport tells its caller when a call does not end with an answer.

    Each transport says how it answers a failure (:meth:`fail`); by default cancellation is
    CANCELLED and an unexpected failure is logged as ``NAME failed unexpectedly``.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger

    async def overloaded(self, ctx: Ctx) -> Answer:
        """The answer to a call refused because the process has too many in flight."""
        return await self.fail(OVERLOADED_FAILURE, ctx)

    def cancelled(self, ctx: Ctx) -> str:
        """The metrics code of a call its transport cancelled (the caller went away)."""
        return "CANCELLED"

    def unexpected(self, ctx: Ctx, name: str) -> None:
        """Log the exception being handled, which the call did not expect."""
        self.log.exception("%s failed unexpectedly", name)

    @abc.abstractmethod
    async def fail(self, failure: CallFailure, ctx: Ctx) -> Answer:
        """The answer to a call that ended with ``failure``."""


class Unanswered(Faults[None, None]):
    """The faults of an input that arrives without a call (syslog datagrams): the envelope has
    counted and logged the failure, and there is nobody to answer."""

    async def fail(self, failure: CallFailure, ctx: None) -> None:
        return None


class Lease:
    """The runtime one call runs on: taken from the holder on first use, handed back by the envelope.

    While held, the call's log lines name the config generation it runs on.
    """

    __slots__ = ("_holder", "_holder_ref", "_runtime", "_token")

    def __init__(self, holder_ref: Callable[[], RuntimeHolder | None]) -> None:
        self._holder_ref = holder_ref
        self._holder: RuntimeHolder | None = None
        self._runtime: Runtime | None = None
        self._token: Token[int | None] | None = None

    def runtime(self) -> Runtime:
        """The runtime, leased now unless it already is.

        :raises CallFailure: UNAVAILABLE, no config has loaded yet.
        """
        runtime = self._runtime
        if runtime is None:
            holder = self._holder_ref()
            if holder is None:
                raise CallFailure(*NOT_READY)
            runtime = holder.acquire()
            self._holder = holder
            self._runtime = runtime
            self._token = logcontext.generation.set(runtime.generation)
        return runtime

    def release(self) -> None:
        """Hand the runtime back, when held (work that no longer needs it may do so early)."""
        runtime = self._runtime
        if runtime is None:
            return
        self._runtime = None
        if self._token is not None:
            logcontext.generation.reset(self._token)
            self._token = None
        if self._holder is not None:
            self._holder.release(runtime)


class Envelope(Generic[Ctx, Answer]):
    """The calls of one API: see the module's documentation.

    ``admission`` None: calls are not counted against the process-wide limit (a long-lived stream
    that checks admission per message itself, an input with no caller to refuse). ``track``:
    export the API's count of calls in flight as ``mixer_requests_in_flight{api}``.
    """

    __slots__ = ("_admission", "_faults", "_holder_ref", "in_flight")

    def __init__(
        self,
        api: str,
        metrics: ServerMetrics,
        admission: Admission | None,
        holder_ref: Callable[[], RuntimeHolder | None],
        faults: Faults[Ctx, Answer],
        *,
        track: bool = True,
    ) -> None:
        self._admission = admission
        self._holder_ref = holder_ref
        self._faults = faults
        self.in_flight = 0
        if track:
            metrics.track_in_flight(api, lambda: self.in_flight)

    async def run(
        self,
        method: MethodMetrics,
        name: str,
        ctx: Ctx,
        work: Callable[Concatenate[Lease, Ctx, P], Awaitable[Answer]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Answer:
        """``work(lease, ctx, *args)`` inside the envelope; its answer, or the transport's for a
        failure. ``name`` says what failed in the log."""
        started = perf_counter()
        faults = self._faults
        admission = self._admission
        if admission is not None:
            if admission.in_flight >= admission.limit:
                method.observe(OVERLOADED_FAILURE.code.name, perf_counter() - started)
                return await faults.overloaded(ctx)
            admission.in_flight += 1
        self.in_flight += 1
        lease = Lease(self._holder_ref)
        code = "OK"
        failure: CallFailure | None = None
        try:
            return await work(lease, ctx, *args, **kwargs)
        except asyncio.CancelledError:
            code = faults.cancelled(ctx)
            raise
        except Exception as exc:
            failure = self._failure(exc, ctx, name)
        finally:
            lease.release()
            if admission is not None:
                admission.in_flight -= 1
            self.in_flight -= 1
            if failure is not None:
                code = self._count(method, failure)
            method.observe(code, perf_counter() - started)
        return await faults.fail(failure, ctx)

    def run_now(
        self,
        method: MethodMetrics,
        name: str,
        ctx: Ctx,
        work: Callable[Concatenate[Lease, Ctx, P], None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """:meth:`run` for work that never awaits and has no caller to answer (a batch of records
        that arrived without a call): admission and the transport's answers do not apply."""
        started = perf_counter()
        self.in_flight += 1
        lease = Lease(self._holder_ref)
        code = "OK"
        try:
            work(lease, ctx, *args, **kwargs)
        except Exception as exc:
            code = self._count(method, self._failure(exc, ctx, name))
        finally:
            lease.release()
            self.in_flight -= 1
            method.observe(code, perf_counter() - started)

    def _failure(self, exc: Exception, ctx: Ctx, name: str) -> CallFailure:
        # Called while ``exc`` is being handled, so that an unexpected one is logged with its traceback.
        if isinstance(exc, CallFailure):
            return exc
        if isinstance(exc, DECODE_ERRORS):
            return CallFailure(exc.code, str(exc), decode_error=True)
        self._faults.unexpected(ctx, name)
        return INTERNAL_FAILURE

    @staticmethod
    def _count(method: MethodMetrics, failure: CallFailure) -> str:
        if failure.decode_error:
            method.decode_errors.inc()
        return failure.code.name
