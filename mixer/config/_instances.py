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
from mixer.expr.codegen import CAUGHT, Emitter, evaluation_error, make_function
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
#: Only in a plan's generator steps: a single compiled expression, inlined into the generated build.
_EXPR = 3
_Step: TypeAlias = tuple[int, Any]


class SharedMap:
    """A map field whose expressions several instances of one config share.

    Istio's stock metrics give four instances the same nineteen dimensions; evaluating them once
    per bag instead of four times is most of the cost of building those instances. The last bag
    and its result are kept (a strong reference, so identity cannot be reused by another bag):
    instances of one request are built one after another, so the second to fourth hit. Instances
    that share a map share the dict: handlers treat instance fields as read-only.
    """

    __slots__ = ("_bag", "_compute", "_value")

    def __init__(self, compute: Callable[[AttributeBag], dict[str, Any]]) -> None:
        self._compute = compute
        self._bag: AttributeBag | None = None
        self._value: dict[str, Any] = {}

    @classmethod
    def of_closures(cls, items: tuple[tuple[str, CompiledExpression], ...]) -> SharedMap:
        """The reference form: one compiled-expression closure call per entry."""
        evaluators = tuple((key, expr.evaluate) for key, expr in items)
        return cls(lambda bag: {key: evaluate(bag) for key, evaluate in evaluators})

    @classmethod
    def generated(cls, items: tuple[tuple[str, CompiledExpression], ...]) -> SharedMap:
        """One generated function computing the whole map (same values and errors as the closures)."""
        evaluators = tuple((key, expr.evaluate) for key, expr in items)

        def reference(bag: AttributeBag) -> dict[str, Any]:
            return {key: evaluate(bag) for key, evaluate in evaluators}

        e = Emitter()
        body = ["get = bag.get", "gmv = bag.get_map_value"]
        entries: list[str] = []
        for i, (key, expr) in enumerate(items):
            body.extend(_field_lines(e, f"_v{i}", expr))
            entries.append(f"{e.value(key)}: _v{i}")
        body.append("return {" + ", ".join(entries) + "}")
        return cls(make_function(e, body, "shared_map", reference))

    def __call__(self, bag: AttributeBag) -> dict[str, Any]:
        if bag is self._bag:
            return self._value
        # An expression error propagates before the cache is touched, so a failed bag is retried.
        value = self._compute(bag)
        self._bag = bag
        self._value = value
        return value


#: Shared map steps of one configuration, by the texts and types of their expressions: the
#: reference (closures) and the generated form, kept apart so neither sees the other's cache.
SharedMaps: TypeAlias = dict[tuple[tuple[str, str, int], ...], tuple[SharedMap, SharedMap]]


def _field_lines(e: Emitter, target: str, expr: CompiledExpression) -> list[str]:
    """Statements assigning ``expr``'s value to ``target``, failing as ``expr.evaluate`` does."""
    return [
        "try:",
        f"    {target} = {expr.source(e)}",
        f"except {e.value(CAUGHT)} as exc:",
        f"    raise {e.value(evaluation_error)}({e.value(expr.text)}, exc) from exc",
    ]


class CompiledInstanceBuilder:
    """Builds instances of one template from a bag (implements :class:`mixer.config.InstanceBuilder`).

    ``expressions`` keeps the compiled expressions by field for inspection (``redacted``,
    tooling); ``build`` uses a flat plan precomputed from them.

    :raises mixer.expr.EvaluationError: from ``build``, when an expression fails on the bag.
    """

    __slots__ = ("_factory", "_steps", "build", "expressions", "name", "template")

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
        #: The instance for a bag: one generated function (``build_reference`` is what it must equal).
        self.build: Callable[[AttributeBag], Instance] = _generate_build(name, plan, self.build_reference)

    def build_reference(self, bag: AttributeBag) -> Instance:
        """The instance for ``bag`` through the expression closures (the reference for ``build``)."""
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

    __slots__ = ("factory", "generated", "steps")

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
        # The same plan for the generator: (kind, expression | generated shared map | plan | default).
        gen: list[_Step] = []
        for f in fields:
            tree = expressions.get(f.name)
            spec = by_name.get(f.name)
            if tree is None or spec is None:
                default = _default_of(cls, f)
                steps.append((_DEFAULT, default))
                gen.append((_DEFAULT, default))
            elif isinstance(tree, CompiledExpression):
                steps.append((_CALL, tree.evaluate))
                gen.append((_EXPR, tree))
            elif spec.kind is FieldKind.MAP:
                exprs = tuple((key, _as_expression(expr)) for key, expr in tree.items())
                signature = tuple((key, expr.text, int(expr.type)) for key, expr in exprs)
                table = shared if shared is not None else {}
                pair = table.get(signature)
                if pair is None:
                    pair = table[signature] = (SharedMap.of_closures(exprs), SharedMap.generated(exprs))
                steps.append((_CALL, pair[0]))
                gen.append((_CALL, pair[1]))
            else:
                struct = _StructBuilder(hints[f.name], spec.fields, tree, shared)
                steps.append((_STRUCT, struct))
                gen.append((_STRUCT, struct.plan))
        self.steps: tuple[_Step, ...] = tuple(steps)
        self.generated: tuple[_Step, ...] = tuple(gen)


def _generate_build(
    name: str, plan: _Plan, reference: Callable[[AttributeBag], Instance]
) -> Callable[[AttributeBag], Instance]:
    """One function building the instance: every expression inlined as generated code, every
    struct constructed in place, in the argument order of the closures' plan (so errors match)."""
    e = Emitter()
    body = ["get = bag.get", "gmv = bag.get_map_value"]
    counter = iter(range(1_000_000))

    def arguments(p: _Plan) -> list[str]:
        names: list[str] = []
        for kind, payload in p.generated:
            target = f"_a{next(counter)}"
            if kind == _EXPR:
                body.extend(_field_lines(e, target, payload))
            elif kind == _CALL:
                body.append(f"{target} = {e.value(payload)}(bag)")
            elif kind == _STRUCT:
                inner = arguments(payload)
                body.append(f"{target} = {e.value(payload.factory)}({', '.join(inner)})")
            else:
                body.append(f"{target} = {e.value(payload)}()")
            names.append(target)
        return names

    args = arguments(plan)
    body.append(f"return {e.value(plan.factory)}({', '.join([e.value(name), *args])})")
    build: Callable[[AttributeBag], Instance] = make_function(e, body, "build", reference)
    return build


class _StructBuilder:
    __slots__ = ("_factory", "_steps", "plan")

    def __init__(
        self,
        cls: type[Any],
        specs: tuple[FieldSpec, ...],
        expressions: ExpressionTree,
        shared: SharedMaps | None,
    ) -> None:
        plan = _Plan(cls, specs, expressions, shared=shared)
        self.plan = plan
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
