"""Type checking and compilation of function and method calls."""

from __future__ import annotations

from typing import Final

from mixer.attributes import AttributeBag, ValueType
from mixer.expr import _functions as fn
from mixer.expr._check_base import CheckerBase
from mixer.expr._code import Code, Value, constant, optional_source, strict_source
from mixer.expr._parser import Call, Node
from mixer.expr._regex import REQUEST_PATTERNS, RegexError, compile_re2
from mixer.expr._types import CONVERTERS
from mixer.expr.codegen import Emitter

_S = ValueType.STRING
_I = ValueType.INT64
_B = ValueType.BOOL
_M = ValueType.STRING_MAP

_VALIDATORS: Final = {
    "ip": ValueType.IP_ADDRESS,
    "timestamp": ValueType.TIMESTAMP,
    "duration": ValueType.DURATION,
    "email": ValueType.EMAIL_ADDRESS,
    "dnsName": ValueType.DNS_NAME,
    "uri": ValueType.URI,
}
_FUNCTIONS: Final = frozenset(
    {
        *_VALIDATORS,
        "match",
        "matches",
        "startsWith",
        "endsWith",
        "emptyStringMap",
        "conditional",
        "toLower",
        "size",
    }
)


class CallChecks(CheckerBase):
    """Function and method calls: validators, string functions, ``conditional``, patterns."""

    __slots__ = ()

    def _call(self, node: Call, hint: ValueType | None) -> Code:
        name = node.name
        # A method call is the function with the receiver as first argument: s.startsWith(p).
        args = [node.receiver, *node.args] if node.receiver is not None else list(node.args)
        if name not in _FUNCTIONS:
            kind = "method" if node.receiver is not None else "function"
            raise self._error(f'unknown {kind} "{name}"', node.name_pos)
        if name == "conditional":
            self._arity(node, args, 3)
            return self._conditional(node, args, hint)
        if name == "emptyStringMap":
            self._arity(node, args, 0)
            return constant(_M, fn.EMPTY_STRING_MAP)
        if name in _VALIDATORS:
            self._arity(node, args, 1)
            arg = self._string_arg(node, args, 0)
            target = _VALIDATORS[name]
            convert = CONVERTERS[target]
            return self._apply(convert, target, [arg], args[0].pos, fallible=True)
        if name == "toLower":
            self._arity(node, args, 1)
            return self._apply(fn.to_lower, _S, [self._string_arg(node, args, 0)], node.pos, fallible=False)
        if name == "size":
            self._arity(node, args, 1)
            arg = self.check(args[0], None)
            if arg.type.is_string_like:
                return self._apply(fn.size_of_string, _I, [arg], node.pos, fallible=False)
            if arg.type in (_M, ValueType.BYTES):
                return self._apply(fn.size_of_container, _I, [arg], node.pos, fallible=False)
            raise self._error(
                f'argument 1 of "size" must be a string, STRING_MAP or BYTES, got {arg.type.name}',
                args[0].pos,
            )
        self._arity(node, args, 2)
        first = self._string_arg(node, args, 0)
        second = self._string_arg(node, args, 1)
        if name == "match":
            return self._glob(first, second, node.pos)
        if name == "matches":
            return self._regex(first, second, args[0].pos)
        func = fn.starts_with if name == "startsWith" else fn.ends_with
        if second.is_const and not first.is_const:
            a, c = first.strict, second.const
            method = str.startswith if name == "startsWith" else str.endswith
            fcode = first
            return Code(
                _B,
                lambda bag: method(a(bag), c),
                first.names,
                emit=lambda e: f"{e.value(method)}({strict_source(fcode, e)}, {e.literal(c)})",
            )
        return self._apply(func, _B, [first, second], node.pos, fallible=False)

    def _arity(self, node: Call, args: list[Node], count: int) -> None:
        if len(args) != count:
            plural = "" if count == 1 else "s"
            raise self._error(f'"{node.name}" takes {count} argument{plural}, got {len(args)}', node.name_pos)

    def _string_arg(self, node: Call, args: list[Node], index: int) -> Code:
        code = self.check(args[index], None)
        if not code.type.is_string_like:
            raise self._error(
                f'argument {index + 1} of "{node.name}" must be a string, got {code.type.name}',
                args[index].pos,
            )
        return code

    def _conditional(self, node: Call, args: list[Node], hint: ValueType | None) -> Code:
        cond = self.check(args[0], None)
        self._expect(cond, _B, 'the condition of "conditional"', args[0].pos)
        yes, no = self._pair(args[1], args[2], hint, strings=True)
        if yes.type is not no.type:
            raise self._error(
                f'the branches of "conditional" must have the same type, got {yes.type.name} and '
                f"{no.type.name}",
                args[2].pos,
            )
        if cond.is_const:
            return yes if cond.const else no
        c, c_opt = cond.strict, cond.optional
        y, n, y_opt, n_opt = yes.strict, no.strict, yes.optional, no.optional

        def strict(bag: AttributeBag) -> Value:
            return y(bag) if c(bag) else n(bag)

        def optional(bag: AttributeBag) -> Value:
            chosen = c_opt(bag)
            if chosen is None:
                return None
            return y_opt(bag) if chosen else n_opt(bag)

        def emit(e: Emitter) -> str:
            return f"({strict_source(yes, e)} if {strict_source(cond, e)} else {strict_source(no, e)})"

        def emit_opt(e: Emitter) -> str:
            t = e.temp()
            return (
                f"(None if ({t} := {optional_source(cond, e)}) is None "
                f"else ({optional_source(yes, e)} if {t} else {optional_source(no, e)}))"
            )

        return Code(
            yes.type, strict, cond.names | yes.names | no.names, optional, emit=emit, emit_opt=emit_opt
        )

    def _glob(self, subject: Code, pattern: Code, pos: int) -> Code:
        if not pattern.is_const or subject.is_const:
            return self._apply(fn.glob_match, _B, [subject, pattern], pos, fallible=False)
        glob = pattern.const
        assert isinstance(glob, str)
        s = subject.strict
        if glob.endswith("*"):
            prefix = glob[:-1]
            return Code(
                _B,
                lambda bag: s(bag).startswith(prefix),
                subject.names,
                emit=lambda e: f"{strict_source(subject, e)}.startswith({e.literal(prefix)})",
            )
        if glob.startswith("*"):
            suffix = glob[1:]
            return Code(
                _B,
                lambda bag: s(bag).endswith(suffix),
                subject.names,
                emit=lambda e: f"{strict_source(subject, e)}.endswith({e.literal(suffix)})",
            )
        return Code(
            _B,
            lambda bag: s(bag) == glob,
            subject.names,
            emit=lambda e: f"({strict_source(subject, e)} == {e.literal(glob)})",
        )

    def _regex(self, pattern: Code, subject: Code, pos: int) -> Code:
        if not pattern.is_const:
            # A pattern from the request: RE2 bounds its cost; one RE2 refuses matches nothing and is
            # counted, so a caller cannot turn a rule's match into an error.
            return self._apply(REQUEST_PATTERNS.search, _B, [pattern, subject], pos, fallible=False)
        source = pattern.const
        assert isinstance(source, str)
        try:
            compiled = compile_re2(source)
        except RegexError as exc:
            raise self._error(f"invalid regular expression {source!r}: {exc}", pos) from None
        find = compiled.search
        if subject.is_const:
            assert isinstance(subject.const, str)
            return constant(_B, find(subject.const))
        s = subject.strict
        return Code(
            _B,
            lambda bag: find(s(bag)),
            subject.names,
            emit=lambda e: f"{e.value(find)}({strict_source(subject, e)})",
        )
