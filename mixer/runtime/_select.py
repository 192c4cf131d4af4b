"""Check rules selected for a request: matches, header operations and instances to dispatch."""

from __future__ import annotations

import logging
from typing import cast

from mixer.adapter import CheckResult
from mixer.attributes import AttributeBag, AttributeValue, TrackingBag
from mixer.decision import HeaderOperationResult
from mixer.runtime._calls import HandlerCalls, PendingCheck, failed_check
from mixer.runtime._index import CheckAction, CheckRule, HeaderOp
from mixer.runtime._produced import FieldSources, ProducedBag
from mixer.status import Code
from mixer.templates import RequestContext

#: A rule whose header operations wait for its actions' outputs, and (slot, output prefix) of each.
Deferred = tuple[CheckRule, list[tuple[int, str]]]


class CheckSelection:
    """Selects, for one runtime, what a Check's rules ask for."""

    __slots__ = ("_calls", "_logger")

    def __init__(self, calls: HandlerCalls, logger: logging.Logger) -> None:
        self._calls = calls
        self._logger = logger

    def select(
        self,
        rules: tuple[CheckRule, ...],
        tracking: TrackingBag,
        deduplication_id: str,
        names: list[str],
        results: list[CheckResult | None],
        pending: list[PendingCheck],
        spending: list[tuple[int, CheckAction]] | None,
        request_ops: list[HeaderOperationResult] | None,
        response_ops: list[HeaderOperationResult] | None,
        deferred: list[Deferred] | None = None,
    ) -> None:
        """Match ``rules``, evaluate header operations and build instances: ``names`` and
        ``results`` get one slot per action (None until answered), ``pending`` what to call.
        Rules whose header operations read action outputs go to ``deferred`` instead. With
        ``spending``, actions of request-context templates (plan checks, which spend quota) are
        listed there by slot, not built."""
        for rule in rules:
            if rule.match is not None and not self._calls.matches(rule.match, tracking, rule.name):
                continue
            outputs: list[tuple[int, str]] | None = None
            if rule.deferred_headers and deferred is not None:
                outputs = []
                deferred.append((rule, outputs))
            else:
                if rule.request_headers and request_ops is not None:
                    self.header_operations(rule.request_headers, tracking, rule.name, request_ops)
                if rule.response_headers and response_ops is not None:
                    self.header_operations(rule.response_headers, tracking, rule.name, response_ops)
            for action in rule.actions:
                if outputs is not None and action.output_prefix:
                    outputs.append((len(results), action.output_prefix))
                names.append(action.handler_name)
                if spending is not None and action.request_context:
                    # Built once every other part of the precondition is known (see build).
                    spending.append((len(results), action))
                    results.append(None)
                    continue
                self.build(action, len(results), tracking, deduplication_id, results, pending)

    def build(
        self,
        action: CheckAction,
        index: int,
        tracking: TrackingBag,
        deduplication_id: str,
        results: list[CheckResult | None],
        pending: list[PendingCheck],
    ) -> None:
        """Build ``action``'s instance for the slot ``index`` (``results`` has it, or gets it
        appended): a call to make in ``pending``, or the failure in ``results``."""
        answer: CheckResult | None = None
        try:
            instance = action.build(tracking)
        except Exception as exc:
            # Mixer failed the Check when an instance could not be built; the failure is
            # attributed to the handler that would have received it.
            self._calls.stats.instance_errors += 1
            self._logger.debug("instance %s failed to build: %s", action.instance_name, exc)
            answer = failed_check(Code.INTERNAL, f"instance {action.instance_name}: {exc}")
        else:
            if action.request_context:
                # What the handler reads from the tracking bag counts as referenced, since
                # references are collected only after every handler has answered.
                scoped = cast(RequestContext, instance)
                scoped.attributes = tracking
                scoped.deduplication_id = deduplication_id
                if action.fields:
                    scoped.sources = FieldSources(action.fields, tracking)
                if isinstance(tracking, ProducedBag):
                    scoped.produced = frozenset(tracking.produced)
            pending.append((index, action.handler, instance))
        if index == len(results):
            results.append(answer)
        else:
            results[index] = answer

    def output_headers(
        self,
        rule: CheckRule,
        outputs: list[tuple[int, str]],
        tracking: TrackingBag,
        results: list[CheckResult | None],
        request_ops: list[HeaderOperationResult],
        response_ops: list[HeaderOperationResult],
    ) -> None:
        """A rule's header operations over the request's bag plus its actions' outputs
        (``<action name>.output.<field>``), as Mixer evaluated them once the handlers answered."""
        produced: dict[str, AttributeValue] = {}
        for index, prefix in outputs:
            result = results[index]
            if result is not None and result.status.code is Code.OK:
                for name, value in result.outputs.items():
                    produced[prefix + name] = value
        # The outputs derive from what the instances read, which the tracking bag has recorded.
        bag = ProducedBag(tracking, produced) if produced else tracking
        if rule.request_headers:
            self.header_operations(rule.request_headers, bag, rule.name, request_ops)
        if rule.response_headers:
            self.header_operations(rule.response_headers, bag, rule.name, response_ops)

    def header_operations(
        self, ops: tuple[HeaderOp, ...], bag: AttributeBag, rule: str, out: list[HeaderOperationResult]
    ) -> None:
        for op in ops:
            if not op.values:
                out.append(HeaderOperationResult(op.name, "", op.operation))
                continue
            for evaluate in op.values:
                try:
                    value = evaluate(bag)
                except Exception as exc:
                    self._calls.stats.header_errors += 1
                    self._logger.debug("rule %s: header %s failed: %s", rule, op.name, exc)
                    continue
                text = value if isinstance(value, str) else str(value)
                out.append(HeaderOperationResult(op.name, text, op.operation))
