"""The attribute-producing stage: Mixer's preprocessing, run before every other rule.

Rules that send instances of attribute-producing templates (``kubernetes``) to their handlers
(``kubernetesenv``) run first on each Check and on each record of a Report. The handler answers
output fields from memory; the instance's ``attributeBindings`` map them to attributes. As in
Mixer, what the request already carries wins: a produced attribute only fills an attribute the
bag lacks (Mixer merged the outputs into the request's bag keeping existing values), and when
two producers bind the same attribute the first rule in config order wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mixer.adapter import AttributeHandler
from mixer.attributes import AttributeBag, AttributeValue
from mixer.config import OUTPUT_PREFIX
from mixer.runtime._index import Build, Evaluate, Scoped, identity_namespace
from mixer.runtime._outcomes import RuntimeStats

__all__ = ["GenerateAction", "GenerateRule", "generate"]


@dataclass(frozen=True, slots=True)
class GenerateAction:
    handler_name: str
    handler: AttributeHandler
    instance_name: str
    build: Build
    #: (attribute, binding expression over ``OUTPUT_PREFIX + field``), in config order.
    bindings: tuple[tuple[str, Evaluate], ...]


@dataclass(frozen=True, slots=True)
class GenerateRule:
    name: str
    match: Evaluate | None
    actions: tuple[GenerateAction, ...]


def generate(
    scoped: Scoped[GenerateRule],
    bag: AttributeBag,
    stats: RuntimeStats,
    logger: logging.Logger,
) -> dict[str, AttributeValue]:
    """The attributes the producing rules add to ``bag`` (only names ``bag`` lacks).

    Never raises: a match, instance, handler or binding failure is counted and logged at debug
    level, and that action produces nothing (Mixer went on with the request).
    """
    rules = scoped.default
    if scoped.needs_namespace:
        rules = scoped.select(identity_namespace(bag))
    produced: dict[str, AttributeValue] = {}
    for rule in rules:
        if rule.match is not None:
            try:
                if not rule.match(bag):
                    continue
            except Exception as exc:
                stats.match_errors += 1
                logger.debug("rule %s: match failed, treated as false: %s", rule.name, exc)
                continue
        for action in rule.actions:
            try:
                instance = action.build(bag)
            except Exception as exc:
                stats.instance_errors += 1
                logger.debug("instance %s failed to build: %s", action.instance_name, exc)
                continue
            try:
                outputs = action.handler.generate_attributes(instance)
            except Exception as exc:
                stats.count_handler_error(action.handler_name)
                logger.warning("attribute handler %s failed: %r", action.handler_name, exc)
                continue
            out_bag = AttributeBag(_Outputs(outputs))
            for attribute, evaluate in action.bindings:
                if attribute in produced or attribute in bag:
                    continue
                try:
                    value = evaluate(out_bag)
                except Exception as exc:
                    stats.instance_errors += 1
                    logger.debug("instance %s: binding %s failed: %s", action.instance_name, attribute, exc)
                    continue
                if value is not None:
                    produced[attribute] = value
    return produced


class _Outputs(Mapping[str, AttributeValue]):
    """A handler's answer seen under the names the compiled bindings read (no copy)."""

    __slots__ = ("_outputs",)

    def __init__(self, outputs: Mapping[str, AttributeValue]) -> None:
        self._outputs = outputs

    def __getitem__(self, name: str) -> AttributeValue:
        if not name.startswith(OUTPUT_PREFIX):
            raise KeyError(name)
        return self._outputs[name[len(OUTPUT_PREFIX) :]]

    def get(self, name: str, default: AttributeValue | None = None) -> AttributeValue | None:  # type: ignore[override]
        if not name.startswith(OUTPUT_PREFIX):
            return default
        return self._outputs.get(name[len(OUTPUT_PREFIX) :], default)

    def __iter__(self) -> Iterator[str]:
        return (OUTPUT_PREFIX + name for name in self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)
