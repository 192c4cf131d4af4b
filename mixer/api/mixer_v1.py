"""The istio.mixer.v1 ``Mixer`` service: Check and Report over gRPC.

Requests arrive as raw bytes (no deserializer is registered) and are decoded once, by
:mod:`mixer.wire`, against the manifest of the runtime they run on; answers are serialized here.
Every call ends in exactly one of these (see docs/serving.md for the table):

- Check: the CheckResponse of :meth:`Runtime.check <mixer.runtime.Runtime.check>`, a denial being
  an OK call whose precondition carries the handler's status (with ``google.rpc.RetryInfo`` and
  ``QuotaFailure`` details when rate limits refused it).
- Report: an empty ReportResponse once every bag is in its handlers' queues (and committed to
  the spool of each handler that acknowledges from its spool, see docs/delivery.md); the runtime's
  :attr:`ReportOutcome.status <mixer.runtime.ReportOutcome.status>` otherwise (UNAVAILABLE when a
  handler is overloaded, UNKNOWN with the reasons when instances or handlers failed).
- RESOURCE_EXHAUSTED for a Report of more bags than ``ServiceLimits.max_report_records``.
- INVALID_ARGUMENT for a malformed request or one over a decoding limit; INTERNAL for a
  ``global_word_count`` above this server's dictionary; UNAVAILABLE when the process already has
  ``Admission.limit`` requests in flight; DEADLINE_EXCEEDED when the caller's deadline passes
  first; INTERNAL for anything unexpected, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

import grpc

from mixer import logcontext
from mixer.api._common import Admission, ServiceLimits, decode_report_in_slices
from mixer.api._details import rate_limit_details
from mixer.api._status import DEADLINE_EXCEEDED, INTERNAL, OVERLOADED, decode_failure, grpc_code
from mixer.status import Code
from mixer.wire import (
    GlobalDictionaryMismatch,
    WireDecodeError,
    build_check_response,
    decode_check_request,
)

if TYPE_CHECKING:
    from mixer.api._registry import ServiceContext
    from mixer.server import RuntimeHolder, ServerMetrics

__all__ = ["API", "CHECK_METHOD", "REPORT_METHOD", "SERVICE_NAME", "MixerV1Service", "grpc_service"]

SERVICE_NAME: Final = "istio.mixer.v1.Mixer"
CHECK_METHOD: Final = f"/{SERVICE_NAME}/Check"
REPORT_METHOD: Final = f"/{SERVICE_NAME}/Report"
#: The ``api`` label of this service's metrics.
API: Final = "mixer_v1"

_EMPTY_REPORT_RESPONSE: Final = b""
_DEADLINE: Final = Code.DEADLINE_EXCEEDED


class MixerV1Service:
    """Check and Report for one server process; :meth:`rpc_handler` registers them with grpc.aio."""

    def __init__(
        self,
        holder: RuntimeHolder,
        metrics: ServerMetrics,
        admission: Admission,
        limits: ServiceLimits,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._holder = holder
        self._admission = admission
        self._limits = limits
        self._log = logger if logger is not None else logging.getLogger("mixer.api.mixer_v1")
        self._check_metrics = metrics.method(API, "Check")
        self._report_metrics = metrics.method(API, "Report")
        self.in_flight = 0
        metrics.track_in_flight(API, lambda: self.in_flight)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        # No (de)serializers: the request arrives as bytes and our codec parses it exactly once.
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Check": grpc.unary_unary_rpc_method_handler(self.check),
                "Report": grpc.unary_unary_rpc_method_handler(self.report),
            },
        )

    async def check(self, request: bytes, context: Any) -> bytes:
        started = perf_counter()
        metrics = self._check_metrics
        admission = self._admission
        if admission.in_flight >= admission.limit:
            metrics.observe(OVERLOADED[0].name, perf_counter() - started)
            await context.abort(*OVERLOADED)
        admission.in_flight += 1
        self.in_flight += 1
        holder = self._holder
        runtime = holder.acquire()
        # Log lines of this call, the envelope's own included, name the config it ran on.
        generation = logcontext.generation.set(runtime.generation)
        code = "OK"
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            limits = self._limits
            try:
                decoded = decode_check_request(
                    request,
                    runtime.config.manifest,
                    max_attributes=limits.max_attributes,
                    max_string_length=limits.max_string_length,
                    max_map_entries=limits.max_map_entries,
                )
            except (WireDecodeError, GlobalDictionaryMismatch) as exc:
                metrics.decode_errors.inc()
                failure = decode_failure(exc)
            else:
                timeout = limits.check_timeout
                remaining = context.time_remaining()
                if remaining is not None and remaining < timeout:
                    timeout = remaining
                if timeout <= 0:
                    failure = DEADLINE_EXCEEDED
                else:
                    outcome = await runtime.check(
                        decoded.bag, decoded.quotas, decoded.deduplication_id, timeout=timeout
                    )
                    if outcome.status.code is _DEADLINE and _expired(context):
                        # The caller has stopped listening; say why rather than send a decision.
                        failure = DEADLINE_EXCEEDED
                    else:
                        answer: bytes = build_check_response(
                            outcome, details=rate_limit_details(outcome)
                        ).SerializeToString()
                        return answer
        except asyncio.CancelledError:
            # grpc cancels the handler when the caller cancels or its deadline passes.
            code = "DEADLINE_EXCEEDED" if _expired(context) else "CANCELLED"
            raise
        except Exception:
            self._log.exception("Check failed unexpectedly")
            failure = INTERNAL
        finally:
            logcontext.generation.reset(generation)
            holder.release(runtime)
            admission.in_flight -= 1
            self.in_flight -= 1
            if failure is not None:
                code = failure[0].name
            metrics.observe(code, perf_counter() - started)
        assert failure is not None
        await context.abort(*failure)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def report(self, request: bytes, context: Any) -> bytes:
        started = perf_counter()
        metrics = self._report_metrics
        admission = self._admission
        if admission.in_flight >= admission.limit:
            metrics.observe(OVERLOADED[0].name, perf_counter() - started)
            await context.abort(*OVERLOADED)
        # A large Report is decoded and dispatched in slices that yield to the event loop, so it
        # holds its runtime (a reload may swap runtimes meanwhile) and counts as in flight.
        admission.in_flight += 1
        self.in_flight += 1
        holder = self._holder
        runtime = holder.acquire()
        code = "OK"
        # No reset needed: grpc runs each call in a task of its own, whose context ends with it.
        logcontext.generation.set(runtime.generation)
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            try:
                bags = await decode_report_in_slices(request, runtime.config.manifest, self._limits)
            except (WireDecodeError, GlobalDictionaryMismatch) as exc:
                metrics.decode_errors.inc()
                failure = decode_failure(exc)
            else:
                # Answered once the records are queued or, for handlers acknowledging from their
                # spool, committed there (docs/delivery.md).
                status = await (await runtime.report_in_slices(bags)).durable_status()
                if status.code is not Code.OK:
                    failure = (grpc_code(status.code), status.message)
        except asyncio.CancelledError:
            code = "DEADLINE_EXCEEDED" if _expired(context) else "CANCELLED"
            raise
        except Exception:
            self._log.exception("Report failed unexpectedly")
            failure = INTERNAL
        finally:
            holder.release(runtime)
            admission.in_flight -= 1
            self.in_flight -= 1
            if failure is not None:
                code = failure[0].name
            metrics.observe(code, perf_counter() - started)
        if failure is None:
            return _EMPTY_REPORT_RESPONSE
        await context.abort(*failure)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _expired(context: Any) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def grpc_service(context: ServiceContext) -> grpc.GenericRpcHandler:
    """The istio.mixer.v1 service for a server (see :mod:`mixer.api._registry`)."""
    holder = context.runtime_holder()
    if holder is None:
        raise RuntimeError("the Mixer service needs a runtime")
    service = MixerV1Service(
        holder, context.metrics, context.admission, context.limits, logger=context.logger
    )
    return service.rpc_handler()
