"""``attributeBindings``: how an attribute-producing instance's outputs become attributes.

Each binding maps an attribute name to an expression over the template's output fields, written
``$out.<field>`` as in Mixer (``destination.workload.name: $out.destination_workload_name |
"unknown"``). The expression language has no ``$``, so ``$out.`` is rewritten to the reserved
prefix :data:`OUTPUT_PREFIX` (outside string literals) and the expression is compiled against a
manifest of the output fields alone: a binding reads nothing but the handler's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mixer.attributes import AttributeManifest, ValueType
from mixer.config._errors import join_path
from mixer.config._instances import Reporter
from mixer.expr import CompiledExpression, ExpressionError
from mixer.expr import compile as compile_expression
from mixer.templates import TemplateSpec

__all__ = ["OUTPUT_PREFIX", "AttributeBinding", "compile_bindings", "rewrite_out"]

#: What ``$out.`` becomes: a bag of ``OUTPUT_PREFIX + field`` names holds the handler's answer.
OUTPUT_PREFIX = "__out."
_OUT = "$out."


@dataclass(frozen=True, slots=True)
class AttributeBinding:
    """One ``attribute: expression`` of ``attributeBindings``, compiled."""

    attribute: str
    expression: CompiledExpression


def rewrite_out(text: str) -> str:
    """``text`` with every ``$out.`` outside a string literal replaced by :data:`OUTPUT_PREFIX`."""
    if _OUT not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'`":
            # Copy the literal whole; a backslash escapes the next character except in raw strings.
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if ch != "`" and text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith(_OUT, i):
            out.append(OUTPUT_PREFIX)
            i += len(_OUT)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def compile_bindings(
    template: TemplateSpec,
    bindings: Mapping[str, object],
    manifest: AttributeManifest,
    path: str,
    report: Reporter,
) -> tuple[AttributeBinding, ...] | None:
    """Compile ``bindings`` (the instance's ``attributeBindings``); problems go to ``report``.

    Each target must be a declared attribute and its expression must have the attribute's type.
    :returns: the bindings in config order, or None when any failed.
    """
    outputs = {OUTPUT_PREFIX + spec.name: spec.value_type for spec in template.outputs}
    types = {name: t for name, t in outputs.items() if t is not None}
    compiled: list[AttributeBinding] = []
    failed = False
    for attribute, text in bindings.items():
        where = join_path(path, str(attribute))
        if not isinstance(text, str):
            report(where, f"expected an expression string, got {type(text).__name__}")
            failed = True
            continue
        target = manifest.get(str(attribute))
        if target is None:
            report(where, f'attribute "{attribute}" is not declared in any attribute manifest')
            failed = True
            continue
        expected = None if target is ValueType.VALUE_TYPE_UNSPECIFIED else target
        try:
            expression = compile_expression(rewrite_out(text), types, expected)
        except ExpressionError as exc:
            report(where, f"{_restore(str(exc))}")
            failed = True
            continue
        compiled.append(AttributeBinding(str(attribute), expression))
    return None if failed else tuple(compiled)


def _restore(message: str) -> str:
    # Errors quote the rewritten text; show the operator what they wrote.
    return message.replace(OUTPUT_PREFIX, _OUT)
