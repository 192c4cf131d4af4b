"""The runtime: a configuration compiled into an immutable snapshot that dispatches requests.

:func:`build_runtime` turns a :class:`~mixer.config.ValidatedConfig` into a :class:`Runtime`:
handlers built through their adapters' factories, rules indexed once per template variety (check,
quota, report). Requests only run the compiled code; nothing on the hot path touches YAML,
expression text or the plugin manager.

Namespaces
    Rules in the default config namespace (``istio-system`` unless configured) apply to all
    traffic. Rules in namespace N apply only to requests whose identity namespace is N. As in
    Mixer, it depends on ``context.reporter.kind`` (``inbound`` when absent): for ``inbound``
    the value of ``destination.namespace`` (or of ``destination.service.namespace`` when the
    former is absent), for ``outbound`` (a client-side report) the value of
    ``source.namespace``; other kinds have none. The identity namespace is read only when some
    rule of the variety being dispatched is scoped to a namespace, so it appears in a Check's
    referenced attributes exactly when the decision depended on it.

Check (:meth:`Runtime.check`), as Mixer answered it
    - Every read goes through ``bag.tracking()``; ``CheckOutcome.referenced`` lists what the
      precondition read (rule matches, the instances of matched rules, header operation values)
      and each quota outcome lists what that quota read, because the proxy caches each answer
      under exactly those attributes.
    - No matching check rule: OK, valid for 1 minute and 10000 uses.
    - Several check handlers run concurrently (one is awaited directly). The status is the first
      failing one in rule order with the message ``"handler: reason"`` for every failing handler
      joined by ``", "``; valid duration and use count are the minimum over the handlers.
    - A rule match that fails to evaluate counts as false (``RuntimeStats.match_errors``).
    - An instance that fails to build is counted (``RuntimeStats.instance_errors``) and, because
      Mixer failed such a Check, becomes an INTERNAL status of the handler it was meant for, with a
      message naming the instance. A handler that raises becomes INTERNAL with its message; one
      that outlives the call's ``timeout`` DEADLINE_EXCEEDED. Failures the runtime makes in place
      of a handler's verdict carry valid duration 0 and use count 0 so the proxy does not cache
      them.
    - Header operations of matched check rules are evaluated in rule order into
      ``request_header_operations`` / ``response_header_operations``, one operation per value
      (a REMOVE without values gives one with an empty value); a value that fails to evaluate is
      left out (``RuntimeStats.header_errors``). They are returned whatever the status, as the
      proxy may apply response operations to a denial. When the precondition is OK, the headers
      check handlers returned (``CheckResult.headers``, e.g. the caller's plan) are merged in rule
      order into ``CheckOutcome.headers`` and also lead the request header operations as REPLACE,
      ahead of the configured operations so that operators' rules have the last word.
    - Rate limits check handlers report (``CheckResult.rate_limits``, OK or not) are collected in
      rule order into ``CheckOutcome.rate_limits``; their ``RateLimit-Policy``, ``RateLimit`` and
      ``Retry-After`` headers lead the response header operations as REPLACE.
    - Instances of ``request_context`` templates (plancheck) get the tracking bag as
      ``attributes`` and the Check's ``deduplication_id`` before dispatch, so what a handler's own
      expressions read is referenced and a retried Check is recognised.
    - Quotas are dispatched only when the precondition is OK. A requested quota name selects the
      quota rules with an instance named ``name.namespace``, ``name`` or ``name.quota.namespace``
      (compared case-insensitively, as Mixer did); the handler gets
      ``QuotaArgs(deduplication_id + quota name, amount, best_effort)``. A quota no rule
      configures, or whose rules all fail to match, is granted the amount asked for 1 minute.
      Several handlers for one quota: the granted amount and valid duration are the minimum, the
      status the first failing one (messages joined as for Check).
    - Rule sampling does not apply to Check or quota: a policy decision is never sampled.
    - With ``build_runtime(check_cache_bytes=N)``, the precondition's answer (rule matches, header
      operations, the answers of handlers that spend nothing) is cached under the values of the
      attributes it referenced, for the minimum validity its handlers returned; a Check answered
      from it gets what is left of that validity. Plan checks and quotas still run every time.
      The cache is dropped when a runtime of a newer config starts and when a handler calls
      ``HandlerEnv.answers_changed`` (see :mod:`mixer.runtime._check_cache`).

Attributes produced by check handlers (Mixer's attribute-producing adapters, e.g. ``jwt``)
    - Check actions whose handler's adapter declares ``AdapterInfo.produces_attributes`` run in a
      first phase, before every other check rule whatever the configured order (a rule with both
      kinds of actions is split; its match is evaluated in each phase, its header operations only
      in the second). They run concurrently like other check handlers.
    - If any of them answers other than OK, that decides the Check: no other check rule, plan
      check or quota runs, and the referenced attributes are what the first phase read.
    - Otherwise the ``CheckResult.attributes`` of their OK answers are layered, in rule order (a
      later producer wins), over the request's bag, without copying it. Values that do not have
      their manifest type are dropped, logged and counted as that handler's error
      (``RuntimeStats.handler_errors``). Every other check rule, instance, header operation, plan
      check and quota of the Check then reads the layered bag.
    - Referenced attributes: reading a produced attribute records what the first phase read
      (the token header, say) instead of the attribute, since a proxy caches an answer only
      under attributes it sent. Producers bound the answer's validity themselves (``jwt`` never
      lets an OK outlive the token's expiry).

Report (:meth:`Runtime.report`)
    Synchronous and never waiting on a backend: each bag is matched against the report rules (no
    reference tracking), rule sampling honoured (Istio's random and rate-limit sampling; random
    is keyed on ``request.id`` so all reports of one request agree), instances built and
    appended to one :class:`~mixer.adapter.ReportBatch` per handler for the whole call (bag
    order, then rule order); each handler's ``handle_report`` is called once.
    Overloaded handlers are listed in ``ReportOutcome.overloaded``; ``ReportOutcome.status`` gives
    the answer Mixer gave (UNAVAILABLE for overload, UNKNOWN with reasons for build or handler
    failures).

Lifecycle and reload
    ``build_runtime(config, registry, previous=current)`` reuses the handlers whose name, adapter
    and params did not change (and, for adapters with ``uses_plans``, the plans neither); a
    handler built anew gets the one it replaces as ``HandlerEnv.previous``. Then
    ``await new.start()`` starts only the new handlers and takes over the reused ones, the server
    swaps ``new`` in, and ``await current.shutdown(timeout)`` stops only the handlers ``new``
    retired. ``Runtime.delta`` names the new, reused and retired
    handlers. If ``new.start()`` fails, it stops what it started and the current runtime stays
    whole.
"""

from __future__ import annotations

from mixer.decision import CheckOutcome, HeaderOperationResult, QuotaOutcome, QuotaRequest
from mixer.runtime._build import build_runtime
from mixer.runtime._index import IDENTITY_NAMESPACE_ATTRIBUTES
from mixer.runtime._outcomes import (
    ReportOutcome,
    RuntimeBuildError,
    RuntimeDelta,
    RuntimeStats,
)
from mixer.runtime._runtime import REPORT_SLICE_SECONDS, Runtime, yield_for

__all__ = [
    "IDENTITY_NAMESPACE_ATTRIBUTES",
    "REPORT_SLICE_SECONDS",
    "CheckOutcome",
    "HeaderOperationResult",
    "QuotaOutcome",
    "QuotaRequest",
    "ReportOutcome",
    "Runtime",
    "RuntimeBuildError",
    "RuntimeDelta",
    "RuntimeStats",
    "build_runtime",
    "yield_for",
]
