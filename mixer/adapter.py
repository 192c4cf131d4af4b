"""The adapter contract: what a handler is, what it receives and what it answers.

An adapter is a name, a typed config model with defaults and no side effects, a factory that
builds a handler from a validated config, the templates it supports and a stability level
(:class:`AdapterInfo`). Handlers implement one or more of :class:`CheckHandler`,
:class:`QuotaHandler` and :class:`ReportHandler`, plus the lifecycle of :class:`Handler`.

Lifecycle contract: ``start()`` returns quickly (connections may finish in the background);
``shutdown(timeout)`` is idempotent, stops intake, flushes within ``timeout`` seconds and releases
everything. ``handle_report`` never waits on a backend: it accepts the batch into the handler's
queue or raises :class:`HandlerOverloaded`.
"""

from __future__ import annotations

import abc
import enum
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Generic, Literal

from pydantic import BaseModel
from typing_extensions import TypeVar

from mixer.attributes import AttributeValue
from mixer.decision import DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT, RateLimitInfo
from mixer.frozen import quick_init
from mixer.plans import KeyStoreInfo, PlanConfig
from mixer.status import OK, Status
from mixer.templates import Instance, QuotaInstance


class Stability(enum.Enum):
    DEVELOPMENT = "development"
    ALPHA = "alpha"
    BETA = "beta"
    STABLE = "stable"


class HandlerOverloaded(Exception):
    """A report handler's queue is full; the caller answers UNAVAILABLE."""


#: When a Report is answered (see ``docs/delivery.md``): ``memory`` once its records are queued,
#: ``spool`` once they are committed to the handler's spool, ``auto`` like ``spool`` only while
#: the backend is failing or has a backlog.
DeliveryAck = Literal["memory", "spool", "auto"]


@dataclass(frozen=True, slots=True)
class HandlerEnv:
    """What a factory gets besides its config: where it may keep files and how it logs.

    ``plans`` are the configuration's plan documents by name (filled for every handler; an adapter
    that reads them declares ``AdapterInfo.uses_plans`` so that a reload rebuilds its handlers when
    a plan changes). ``key_stores`` are the API key stores plugins registered, by name.
    ``previous`` is the handler of the same name and adapter that a reload replaces (it keeps
    serving until the new runtime is swapped in, then is shut down): a handler may carry state
    over from it, as memquota keeps its counters. ``delivery_ack`` is the server's
    ``--delivery-ack``: the acknowledgement mode of handlers whose config does not set one.
    ``answers_changed`` is for a check handler whose answers may change without a reload (a list
    refreshed): calling it drops every Check answer the runtime cached.
    """

    handler_name: str
    logger: logging.Logger
    data_dir: Path | None = None
    plans: Mapping[str, PlanConfig] = field(default_factory=dict)
    key_stores: Mapping[str, KeyStoreInfo] = field(default_factory=dict)
    previous: Handler | None = None
    delivery_ack: DeliveryAck = "auto"
    answers_changed: Callable[[], None] = field(default=lambda: None)


@quick_init
@dataclass(frozen=True, slots=True)
class CheckResult:
    status: Status = OK
    valid_duration: timedelta = DEFAULT_VALID_DURATION
    valid_use_count: int = DEFAULT_VALID_USE_COUNT
    #: Headers a proxy should add to the request it lets through (for example the caller's plan).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The rate limits this answer applied, for the RateLimit response headers (also on a denial).
    rate_limits: tuple[RateLimitInfo, ...] = ()
    #: Attributes this answer establishes for the request (for example the claims of a verified
    #: token). Only read from handlers whose adapter declares ``AdapterInfo.produces_attributes``
    #: and only when the status is OK: the runtime layers them over the request's bag before it
    #: evaluates the other check rules and the quotas (see :mod:`mixer.runtime`). Values must have
    #: the types the attribute manifest declares; others are dropped and counted as handler errors.
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    #: The output of a check-with-output template (an out-of-process adapter's OutputMsg, by
    #: field): a rule reads it as ``<action name>.output.<field>`` in its header operations.
    outputs: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuotaArgs:
    #: ``deduplication_id + quota name``: a retried Check must not spend quota twice.
    deduplication_id: str
    amount: int
    best_effort: bool = False


@dataclass(frozen=True, slots=True)
class QuotaResult:
    granted_amount: int
    valid_duration: timedelta = DEFAULT_VALID_DURATION
    status: Status = OK


@dataclass(slots=True)
class ReportBatch:
    """The instances one Report produced for one handler, in rule order."""

    handler: str
    instances: list[Instance] = field(default_factory=list)


class Handler:
    """Lifecycle shared by every handler; the defaults do nothing."""

    async def start(self) -> None:
        """Begin work. Returns quickly; errors here fail the start of the server or reload."""

    async def shutdown(self, timeout: float) -> None:
        """Stop intake, flush within ``timeout`` seconds, release everything. Idempotent."""


class CheckHandler(Handler, abc.ABC):
    #: False when ``handle_check`` never waits on anything outside the process (a lookup in
    #: memory): the runtime then awaits it in the Check's own task, one after another, instead
    #: of a task per handler, which costs more than such a handler's whole answer.
    check_waits: bool = True

    @abc.abstractmethod
    async def handle_check(self, instance: Instance) -> CheckResult:
        """Decide on one instance of a check template (listentry, authorization, apikey, ...)."""


class QuotaHandler(Handler, abc.ABC):
    @abc.abstractmethod
    async def handle_quota(self, instance: QuotaInstance, args: QuotaArgs) -> QuotaResult:
        """Allocate ``args.amount`` (or what is left when ``args.best_effort``)."""


class ReportHandler(Handler, abc.ABC):
    @abc.abstractmethod
    def handle_report(self, batch: ReportBatch) -> Awaitable[None] | None:
        """Accept a batch into the handler's queue without waiting on a backend.

        Returns ``None`` when the batch is accepted as far as the handler promises, or an
        awaitable that completes once it is durable (committed to the handler's spool); the
        Report is answered only after it. The awaitable raises :class:`HandlerOverloaded` when
        the batch could not be made durable after all.

        :raises HandlerOverloaded: the queue is full and the batch was not accepted.
        """


class AttributeHandler(Handler, abc.ABC):
    """A handler of an attribute-producing template (Mixer's attribute generators, such as
    ``kubernetesenv`` with the ``kubernetes`` template)."""

    @abc.abstractmethod
    def generate_attributes(self, instance: Instance) -> Mapping[str, AttributeValue]:
        """The template's output fields this request sets, by field name; unset fields are left out.

        Runs on every Check and every record of a Report before any other rule, so it must not
        block or wait: answer from memory (a cache a background task keeps up to date).
        """


#: An adapter's config model. Covariant, with ``BaseModel`` for default, so that an adapter of any
#: config model is an ``AdapterInfo`` and the registry holds them side by side. Seen that way its
#: factory seems to take any model: only :meth:`AdapterInfo.build`, which checks, may call it.
ConfigT_co = TypeVar("ConfigT_co", bound=BaseModel, default=BaseModel, covariant=True)

#: Builds a handler from a config already validated as the adapter's model, and its environment.
HandlerFactory = Callable[[ConfigT_co, HandlerEnv], Handler]


def lazy_factory(target: str) -> Callable[[BaseModel, HandlerEnv], Handler]:
    """A factory for a handler class written as ``"package.module:Class"`` and built as
    ``Class(config, env)``: the module is imported when the first handler is built, so that
    registering the adapter loads neither the handler nor its client library.
    """
    module, _, name = target.partition(":")

    def build(config: BaseModel, env: HandlerEnv) -> Handler:
        handler_class: Callable[[BaseModel, HandlerEnv], Handler] = getattr(
            importlib.import_module(module), name
        )
        return handler_class(config, env)

    return build


@dataclass(frozen=True, slots=True)
class AdapterInfo(Generic[ConfigT_co]):
    """An adapter: what a plugin module declares as ``ADAPTER`` or returns from the
    ``mixer_register_adapters`` hook.

    The factory is typed over the config model: it receives an instance of ``config_model`` and
    needs no check of its own, because handlers are built through :meth:`build`, which checks
    the type once for every adapter.
    """

    name: str
    description: str
    templates: frozenset[str]
    config_model: type[ConfigT_co]
    factory: HandlerFactory[ConfigT_co]
    stability: Stability = Stability.STABLE
    #: Empty: the version of the distribution that registers it (Mesh Mixer's for the built-ins),
    #: filled in on registration.
    version: str = ""
    #: Kinds that name this adapter in the legacy (Istio 1.0) config form; default ``(name,)``.
    legacy_kinds: Sequence[str] = ()
    #: Where the adapter came from ("builtin" or the distribution that provides it); set on registration.
    origin: str = ""
    #: Its handlers read ``HandlerEnv.plans``: a reload that changes any plan rebuilds them.
    uses_plans: bool = False
    #: Its check handlers return ``CheckResult.attributes``: the rules sending to them run first,
    #: and the attributes they produce are seen by every other check rule and quota of the Check.
    produces_attributes: bool = False
    #: Its handlers keep state (counters) in the process's memory, which other processes serving
    #: the same config do not see: a server running several worker processes warns about it.
    process_local_state: bool = False

    def kinds(self) -> tuple[str, ...]:
        return tuple(self.legacy_kinds) or (self.name,)

    def build(self, config: BaseModel, env: HandlerEnv) -> Handler:
        """A handler from ``config``, which must be an instance of ``config_model``.

        :raises TypeError: ``config`` is of another type (a caller's mistake, not a user's: config
            validation builds every adapter's params with its own model).
        """
        if not isinstance(config, self.config_model):
            wanted, got = self.config_model.__name__, type(config).__name__
            raise TypeError(f"adapter {self.name!r} needs {wanted} params, got {got}")
        return self.factory(config, env)
