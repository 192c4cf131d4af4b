"""What the gRPC servicers share: their base class, their envelope's answers, deadlines and the
Check time budget."""

from __future__ import annotations

import abc
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Final

import grpc

from mixer.api._common import Admission, ServiceLimits
from mixer.api._envelope import CallFailure, Envelope, Faults
from mixer.api._status import grpc_code
from mixer.status import Code

if TYPE_CHECKING:
    from mixer.api._holder import RuntimeHolder
    from mixer.api._metrics import MethodMetrics, ServerMetrics
    from mixer.api._registry import ServiceContext

#: A call whose caller's deadline passed first: the status and message it ends with.
DEADLINE_FAILURE: Final = (Code.DEADLINE_EXCEEDED, "deadline exceeded")


class GrpcFaults(Faults[Any, bytes]):
    """A gRPC call that does not end with an answer aborts with the failure's status.

    ``deadlines``: a cancelled call whose deadline has passed counts as DEADLINE_EXCEEDED rather
    than CANCELLED (unary calls; a stream's end is always the client's).
    """

    def __init__(self, logger: logging.Logger, *, deadlines: bool = True) -> None:
        super().__init__(logger)
        self._deadlines = deadlines

    def cancelled(self, ctx: Any) -> str:
        # grpc cancels the handler when the caller cancels or its deadline passes.
        return "DEADLINE_EXCEEDED" if self._deadlines and expired(ctx) else "CANCELLED"

    async def fail(self, failure: CallFailure, ctx: Any) -> bytes:
        await ctx.abort(grpc_code(failure.code), failure.message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


def expired(context: Any) -> bool:
    """Whether the caller's deadline has passed."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def time_budget(limits: ServiceLimits, context: Any) -> float:
    """Seconds this call may still take: the Check budget, or less when the caller's deadline is
    nearer. Not positive when the caller has already given up."""
    budget = limits.check_timeout
    remaining = context.time_remaining()
    if remaining is not None and remaining < budget:
        budget = remaining
    return float(budget)


def deadline_failure() -> CallFailure:
    """The failure of a call whose caller's deadline passed before it was decided."""
    return CallFailure(*DEADLINE_FAILURE)


class GrpcServicer(abc.ABC):
    """A gRPC protocol's servicer in one server process: its calls run in one :class:`Envelope` on
    the server's runtime holder, each method with metrics of its own; :meth:`rpc_handler`
    registers the methods with grpc.aio and :meth:`service` builds one for the server.
    """

    #: The ``api`` label of the service's metrics (its logger is ``mixer.api.<api>``).
    api: ClassVar[str]
    #: The methods, each with its metrics in ``_methods``.
    methods: ClassVar[tuple[str, ...]]
    #: What the service is called when it cannot be built.
    title: ClassVar[str]
    #: Calls count against the process-wide admission limit (a stream checks it per message).
    admitted: ClassVar[bool] = True
    #: A cancelled call whose deadline has passed counts as DEADLINE_EXCEEDED, not CANCELLED.
    deadlines: ClassVar[bool] = True

    def __init__(
        self,
        holder: RuntimeHolder,
        metrics: ServerMetrics,
        admission: Admission,
        limits: ServiceLimits,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._admission = admission
        self._limits = limits
        self._log = logger if logger is not None else logging.getLogger(f"mixer.api.{self.api}")
        self._calls: Envelope[Any, bytes] = Envelope(
            self.api,
            metrics,
            admission if self.admitted else None,
            lambda: holder,
            GrpcFaults(self._log, deadlines=self.deadlines),
        )
        self._methods: dict[str, MethodMetrics] = {
            name: metrics.method(self.api, name) for name in self.methods
        }

    @property
    def in_flight(self) -> int:
        """Calls of this service in flight now."""
        return self._calls.in_flight

    @abc.abstractmethod
    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The methods, for ``grpc.aio.Server.add_generic_rpc_handlers``."""

    @classmethod
    def service(cls, context: ServiceContext) -> grpc.GenericRpcHandler:
        """The service for a server (see :mod:`mixer.api._registry`)."""
        holder = context.runtime_holder()
        if holder is None:
            raise RuntimeError(f"the {cls.title} needs a runtime")
        servicer = cls(holder, context.metrics, context.admission, context.limits, logger=context.logger)
        return servicer.rpc_handler()
