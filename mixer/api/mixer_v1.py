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

from typing import TYPE_CHECKING, Any, Final

import grpc

from mixer.api._common import decode_report_in_slices
from mixer.api._details import rate_limit_details
from mixer.api._envelope import CallFailure, Lease
from mixer.api._grpc import GrpcServicer, deadline_failure, expired, time_budget
from mixer.status import Code
from mixer.wire import decode_check_request, encode_check_response

if TYPE_CHECKING:
    from mixer.api._registry import ServiceContext

__all__ = ["API", "CHECK_METHOD", "REPORT_METHOD", "SERVICE_NAME", "MixerV1Service", "grpc_service"]

SERVICE_NAME: Final = "istio.mixer.v1.Mixer"
CHECK_METHOD: Final = f"/{SERVICE_NAME}/Check"
REPORT_METHOD: Final = f"/{SERVICE_NAME}/Report"
#: The ``api`` label of this service's metrics.
API: Final = "mixer_v1"

_EMPTY_REPORT_RESPONSE: Final = b""


class MixerV1Service(GrpcServicer):
    """Check and Report for one server process; :meth:`rpc_handler` registers them with grpc.aio."""

    api = API
    methods = ("Check", "Report")
    title = "Mixer service"

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
        return await self._calls.run(self._methods["Check"], "Check", context, self._check, request)

    async def report(self, request: bytes, context: Any) -> bytes:
        return await self._calls.run(self._methods["Report"], "Report", context, self._report, request)

    async def _check(self, lease: Lease, context: Any, request: bytes) -> bytes:
        runtime = lease.runtime()
        limits = self._limits
        decoded = decode_check_request(
            request,
            runtime.config.manifest,
            max_attributes=limits.max_attributes,
            max_string_length=limits.max_string_length,
            max_map_entries=limits.max_map_entries,
        )
        timeout = time_budget(limits, context)
        if timeout <= 0:
            raise deadline_failure()
        outcome = await runtime.check(decoded.bag, decoded.quotas, decoded.deduplication_id, timeout=timeout)
        if outcome.status.code is Code.DEADLINE_EXCEEDED and expired(context):
            # The caller has stopped listening; say why rather than send a decision.
            raise deadline_failure()
        return encode_check_response(outcome, details=rate_limit_details(outcome))

    async def _report(self, lease: Lease, context: Any, request: bytes) -> bytes:
        # A large Report is decoded and dispatched in slices that yield to the event loop, so it
        # holds its runtime (a reload may swap runtimes meanwhile) and counts as in flight.
        runtime = lease.runtime()
        bags = await decode_report_in_slices(request, runtime.config.manifest, self._limits)
        # Answered once the records are queued or, for handlers acknowledging from their
        # spool, committed there (docs/delivery.md).
        status = await (await runtime.report_in_slices(bags)).durable_status()
        if status.code is not Code.OK:
            raise CallFailure(status.code, status.message)
        return _EMPTY_REPORT_RESPONSE


def grpc_service(context: ServiceContext) -> grpc.GenericRpcHandler:
    """The istio.mixer.v1 service for a server (see :mod:`mixer.api._registry`)."""
    return MixerV1Service.service(context)
