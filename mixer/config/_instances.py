"""Instance params: compiling a template's field expressions, and building instances per request.

:class:`CompiledInstanceBuilder` is on the Report hot path (a couple of dozen instances per
request): everything that can be decided at load time is, and ``build`` only evaluates the
compiled expressions and calls the instance type's constructor with positional arguments.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, TypeAlias

from mixer.attributes import AttributeBag, AttributeManifest, AttributeValue
from mixer.config._errors import join_path
from mixer.expr import CompiledExpression, ExpressionError
from mixer.expr import compile as compile_expression
from mixer.templates import FieldKind, FieldSpec, Instance, TemplateSpec

#: A template's compiled fields: a VALUE field maps to its expression, a MAP field to a mapping
#: of key to expression, a STRUCT field to a mapping of its member fields (recursively).
ExpressionTree: TypeAlias = Mapping[str, "CompiledExpression | ExpressionTree"]
#: Receives one problem: the field path (relative to the params) and the message.
Reporter: TypeAlias = Callable[[str, str], None]
Evaluate: TypeAlias = Callable[[AttributeBag], AttributeValue]

# Argument kinds of a build plan; small ints compare fastest on the hot path.
# _CALL: a callable of the bag (one expression, or a map of them).
_CALL, _STRUCT, _DEFAULT = 0, 1, 2
_Step: TypeAlias = tuple[int, Any]


class SharedMap:
    """A map field whose expressions several instances of one config share.

    Istio's stock metrics give four instances the same nineteen dimensions; evaluating them once
    per bag instead of four times is most of the cost of building those instances. The last bag
    and its result are kept (a strong reference, so identity cannot be reused by another bag):
    instances of one request are built one after another, so the second to fourth hit. Instances
    that share a map share the dict: handlers treat instance fields as read-only.
    """

    __slots__ = ("_bag", "_items", "_value")

    def __init__(self, items: tuple[tuple[str, Evaluate], ...]) -> None:
        self._items = items
        self._bag: AttributeBag | None = None
        self._value: dict[str, Any] = {}

    def __call__(self, bag: AttributeBag) -> dict[str, Any]:
        if bag is self._bag:
            return self._value
        # An expression error propagates before the cache is touched, so a failed bag is retried.
        value = {key: evaluate(bag) for key, evaluate in self._items}
        self._bag = bag
        self._value = value
        return value


#: Shared map steps of one configuration, by the texts and types of their expressions.
SharedMaps: TypeAlias = dict[tuple[tuple[str, str, int], ...], SharedMap]


class CompiledInstanceBuilder:
    """Builds instances of one template from a bag (implements :class:`mixer.config.InstanceBuilder`).

    ``expressions`` keeps the compiled expressions by field for inspection (``redacted``,
    tooling); ``build`` uses a flat plan precomputed from them.

    :raises mixer.expr.EvaluationError: from ``build``, when an expression fails on the bag.
    """

    __slots__ = ("_factory", "_steps", "expressions", "name", "template")

    def __init__(
        self,
        name: str,
        template: TemplateSpec,
        expressions: ExpressionTree,
        shared: SharedMaps | None = None,
    ) -> None:
        self.name = name
        self.template = template
        self.expressions = expressions
        plan = _Plan(template.instance_type, template.fields, expressions, leading=("name",), shared=shared)
        self._factory = plan.factory
        self._steps = plan.steps

    def build(self, bag: AttributeBag) -> Instance:
        args: list[Any] = [self.name]
        append = args.append
        for kind, payload in self._steps:
            if kind == _CALL:
                append(payload(bag))
            elif kind == _STRUCT:
                append(payload.build(bag))
            else:
                append(payload())
        instance: Instance = self._factory(*args)
        return instance

    def expression_texts(self) -> dict[str, Any]:
        """The expression text of every configured field, nested like ``expressions``."""
        return _texts(self.expressions)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, template={self.template.name!r})"


class _Plan:
    """Positional constructor arguments for a dataclass, in field order, up to the last configured one."""

    __slots__ = ("factory", "steps")

    def __init__(
        self,
        cls: type[Any],
        specs: tuple[FieldSpec, ...],
        expressions: ExpressionTree,
        leading: tuple[str, ...] = (),
        shared: SharedMaps | None = None,
    ) -> None:
        self.factory: Callable[..., Any] = cls
        fields = [f for f in dataclasses.fields(cls) if f.init]
        if tuple(f.name for f in fields[: len(leading)]) != leading:
            raise TypeError(f"{cls.__name__} must start with the fields {leading}")
        fields = fields[len(leading) :]
        by_name = {spec.name: spec for spec in specs}
        configured = [i for i, f in enumerate(fields) if f.name in expressions]
        # Trailing unconfigured fields take the constructor's defaults without a step each.
        fields = fields[: configured[-1] + 1] if configured else []
        hints = typing.get_type_hints(cls)
        steps: list[_Step] = []
        for f in fields:
            tree = expressions.get(f.name)
            spec = by_name.get(f.name)
            if tree is None or spec is None:
                steps.append((_DEFAULT, _default_of(cls, f)))
            elif isinstance(tree, CompiledExpression):
                steps.append((_CALL, tree.evaluate))
            elif spec.kind is FieldKind.MAP:
                exprs = [(key, _as_expression(expr)) for key, expr in tree.items()]
                signature = tuple((key, expr.text, int(expr.type)) for key, expr in exprs)
                table = shared if shared is not None else {}
                step = table.get(signature)
                if step is None:
                    step = table[signature] = SharedMap(tuple((key, expr.evaluate) for key, expr in exprs))
                steps.append((_CALL, step))
            else:
                steps.append((_STRUCT, _StructBuilder(hints[f.name], spec.fields, tree, shared)))
        self.steps: tuple[_Step, ...] = tuple(steps)


class _StructBuilder:
    __slots__ = ("_factory", "_steps")

    def __init__(
        self,
        cls: type[Any],
        specs: tuple[FieldSpec, ...],
        expressions: ExpressionTree,
        shared: SharedMaps | None,
    ) -> None:
        plan = _Plan(cls, specs, expressions, shared=shared)
        self._factory = plan.factory
        self._steps = plan.steps

    def build(self, bag: AttributeBag) -> Any:
        args: list[Any] = []
        for kind, payload in self._steps:
            if kind == _CALL:
                args.append(payload(bag))
            elif kind == _STRUCT:
                args.append(payload.build(bag))
            else:
                args.append(payload())
        return self._factory(*args)


def _default_of(cls: type[Any], f: dataclasses.Field[Any]) -> Callable[[], Any]:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    if f.default is not dataclasses.MISSING:
        default = f.default
        return lambda: default
    raise TypeError(f"{cls.__name__}.{f.name} has no default")


def _as_expression(node: CompiledExpression | ExpressionTree) -> CompiledExpression:
    if not isinstance(node, CompiledExpression):
        raise TypeError("a map field holds expressions only")
    return node


def _texts(tree: ExpressionTree) -> dict[str, Any]:
    return {
        key: node.text if isinstance(node, CompiledExpression) else _texts(node) for key, node in tree.items()
    }


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """Istio's YAML spells template fields in camelCase too: ``monitoredResourceType``."""
    return _CAMEL_BOUNDARY.sub(r"_\1", name).lower()


def compile_instance(
    name: str,
    template: TemplateSpec,
    params: Mapping[str, Any] | None,
    manifest: AttributeManifest,
    report: Reporter,
    shared: SharedMaps | None = None,
) -> CompiledInstanceBuilder | None:
    """Compiles ``params`` against ``template``; every problem goes to ``report``. None if any.

    Builders compiled with the same ``shared`` table evaluate identical map fields once per bag.
    """
    compiler = _FieldCompiler(manifest, report)
    tree = compiler.fields(template.fields, params or {}, "", f"template {template.name}")
    if compiler.failed:
        return None
    return CompiledInstanceBuilder(name, template, tree, shared)


class _FieldCompiler:
    def __init__(self, manifest: AttributeManifest, report: Reporter) -> None:
        self.manifest = manifest
        self.report = report
        self.errors = 0

    @property
    def failed(self) -> bool:
        return self.errors > 0

    def error(self, path: str, message: str) -> None:
        self.errors += 1
        self.report(path, message)

    def fields(
        self, specs: tuple[FieldSpec, ...], params: Mapping[str, Any], path: str, owner: str
    ) -> dict[str, CompiledExpression | ExpressionTree]:
        by_name = {spec.name: spec for spec in specs}
        given: dict[str, tuple[str, Any]] = {}
        for key, value in params.items():
            key_path = join_path(path, str(key))
            field_name = key if key in by_name else snake_case(str(key))
            spec = by_name.get(field_name)
            if spec is None:
                known = ", ".join(by_name) or "none"
                self.error(key_path, f'unknown field "{key}" for {owner} (fields: {known})')
                continue
            if field_name in given:
                self.error(
                    key_path, f'field "{field_name}" is given twice (as "{given[field_name][0]}" and "{key}")'
                )
                continue
            given[field_name] = (str(key), value)

        tree: dict[str, CompiledExpression | ExpressionTree] = {}
        for spec in specs:
            if spec.name not in given:
                if spec.required:
                    self.error(join_path(path, spec.name), "required field is missing")
                continue
            key, value = given[spec.name]
            field_path = join_path(path, key)
            errors_before = self.errors
            node = self.field(spec, value, field_path, owner)
            if node is not None:
                tree[spec.name] = node
            elif spec.required and self.errors == errors_before:
                self.error(field_path, "required field is empty")
        return tree

    def field(
        self, spec: FieldSpec, value: Any, path: str, owner: str
    ) -> CompiledExpression | ExpressionTree | None:
        if spec.kind is FieldKind.VALUE:
            return self.expression(value, path, spec)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            what = "a map of names to expressions" if spec.kind is FieldKind.MAP else "a mapping of fields"
            self.error(path, f"expected {what}, got {_describe(value)}")
            return None
        if spec.kind is FieldKind.STRUCT:
            return self.fields(spec.fields, value, path, f"{owner} field {spec.name}")
        entries: dict[str, CompiledExpression] = {}
        for key, item in value.items():
            item_path = join_path(path, str(key))
            if not isinstance(key, str):
                self.error(item_path, f"map keys must be strings, got {_describe(key)} (quote it)")
                continue
            compiled = self.expression(item, item_path, spec)
            if compiled is not None:
                entries[key] = compiled
        return entries

    def expression(self, value: Any, path: str, spec: FieldSpec) -> CompiledExpression | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            return compile_expression(text, self.manifest, expected=spec.value_type)
        except ExpressionError as exc:
            self.error(path, str(exc))
            return None

    def text(self, value: Any, path: str) -> str | None:
        # YAML turns unquoted `1` and `true` into numbers and booleans; they are meant as expressions.
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, str):
            return value if value.strip() else None
        if isinstance(value, date):
            self.error(path, f"expected an expression, got the date {value.isoformat()} (quote it)")
        else:
            self.error(path, f"expected an expression, got {_describe(value)}")
        return None


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
