"""Recursive-descent (precedence-climbing) parser producing a small AST.

Operator precedence is Go's, because Mixer parsed expressions with Go's parser: ``||`` 1, ``&&`` 2,
comparisons 3, ``+ - |`` 4, ``* /`` 5; all binary operators associate to the left.
"""

from __future__ import annotations

from typing import Final

from mixer.expr._errors import ExpressionSyntaxError
from mixer.expr._lexer import EOF, FLOAT, IDENT, INT, OP, PUNCT, STRING, Token, tokenize

#: Deep enough for any hand-written expression; shallow enough that compiling and evaluating
#: (both recursive) stay far below Python's recursion limit.
MAX_DEPTH: Final = 64

_INT64_MAX: Final = 2**63 - 1
_PRECEDENCE: Final = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "+": 4,
    "-": 4,
    "|": 4,
    "*": 5,
    "/": 5,
}
# Associative operators are kept as one flat node so long chains (many "||" alternatives) cost no depth.
_CHAINED: Final = frozenset({"||", "&&", "|"})


class Node:
    __slots__ = ("depth", "pos")

    def __init__(self, pos: int, depth: int) -> None:
        self.pos = pos
        self.depth = depth


class Literal(Node):
    """``kind`` is "string", "int", "float" or "bool"."""

    __slots__ = ("kind", "value")

    def __init__(self, pos: int, kind: str, value: str | int | float | bool) -> None:
        super().__init__(pos, 1)
        self.kind = kind
        self.value = value


class Attribute(Node):
    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos, 1)
        self.name = name


class Index(Node):
    __slots__ = ("key", "target")

    def __init__(self, pos: int, target: Node, key: Node) -> None:
        super().__init__(pos, 1 + max(target.depth, key.depth))
        self.target = target
        self.key = key


class Unary(Node):
    __slots__ = ("op", "operand")

    def __init__(self, pos: int, op: str, operand: Node) -> None:
        super().__init__(pos, 1 + operand.depth)
        self.op = op
        self.operand = operand


class Binary(Node):
    __slots__ = ("left", "op", "op_pos", "right")

    def __init__(self, op: str, op_pos: int, left: Node, right: Node) -> None:
        super().__init__(left.pos, 1 + max(left.depth, right.depth))
        self.op = op
        self.op_pos = op_pos
        self.left = left
        self.right = right


class Chain(Node):
    """``a || b || c`` and the like: operands in order, ``op_positions[i]`` before ``operands[i+1]``."""

    __slots__ = ("op", "op_positions", "operands")

    def __init__(self, op: str, operands: list[Node], op_positions: list[int]) -> None:
        super().__init__(operands[0].pos, 1 + max(o.depth for o in operands))
        self.op = op
        self.operands = operands
        self.op_positions = op_positions


class Call(Node):
    """A function call, or a method call when ``receiver`` is set (``s.startsWith(p)``)."""

    __slots__ = ("args", "name", "name_pos", "receiver")

    def __init__(self, pos: int, name: str, name_pos: int, receiver: Node | None, args: list[Node]) -> None:
        children = [*args, receiver] if receiver is not None else args
        super().__init__(pos, 1 + max((c.depth for c in children), default=0))
        self.name = name
        self.name_pos = name_pos
        self.receiver = receiver
        self.args = args


def parse(text: str) -> Node:
    """The AST of ``text``.

    :raises ExpressionSyntaxError: the text is not a well-formed expression or is too long or deep.
    """
    return _Parser(text).parse()


class _Parser:
    __slots__ = ("_i", "_nesting", "_text", "_tokens")

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = tokenize(text)
        self._i = 0
        self._nesting = 0

    def parse(self) -> Node:
        if self._peek().kind == EOF:
            raise self._error("empty expression", self._peek().pos)
        node = self._binary(1)
        tok = self._peek()
        if tok.kind != EOF:
            raise self._error(f"unexpected {_describe(tok)}", tok.pos)
        return node

    # -- token helpers

    def _peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> Token:
        tok = self._tokens[self._i]
        if tok.kind != EOF:
            self._i += 1
        return tok

    def _is(self, tok: Token, kind: str, text: str | None = None) -> bool:
        return tok.kind == kind and (text is None or tok.text == text)

    def _expect(self, kind: str, text: str, what: str) -> Token:
        tok = self._next()
        if not self._is(tok, kind, text):
            raise self._error(f"expected {what}, found {_describe(tok)}", tok.pos)
        return tok

    def _error(self, message: str, pos: int) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(message, pos, self._text)

    def _checked(self, node: Node) -> Node:
        if node.depth > MAX_DEPTH:
            raise self._error(f"expression is nested deeper than {MAX_DEPTH} levels", node.pos)
        return node

    def _enter(self, pos: int) -> None:
        self._nesting += 1
        if self._nesting > MAX_DEPTH:
            raise self._error(f"expression is nested deeper than {MAX_DEPTH} levels", pos)

    # -- grammar

    def _binary(self, min_prec: int) -> Node:
        left = self._unary()
        while True:
            tok = self._peek()
            prec = _PRECEDENCE.get(tok.text, 0) if tok.kind == OP else 0
            if prec < min_prec:
                return left
            self._next()
            self._enter(tok.pos)
            right = self._binary(prec + 1)
            self._nesting -= 1
            left = self._checked(self._combine(tok, left, right))

    def _combine(self, tok: Token, left: Node, right: Node) -> Node:
        op = tok.text
        if op not in _CHAINED:
            return Binary(op, tok.pos, left, right)
        operands: list[Node] = []
        positions: list[int] = []
        for side in (left, right):
            if isinstance(side, Chain) and side.op == op:
                if operands:
                    positions.append(tok.pos)
                operands.extend(side.operands)
                positions.extend(side.op_positions)
            else:
                if operands:
                    positions.append(tok.pos)
                operands.append(side)
        return Chain(op, operands, positions)

    def _unary(self) -> Node:
        tok = self._peek()
        if tok.kind == OP and tok.text in ("!", "-"):
            self._next()
            number = self._peek()
            if (
                tok.text == "-"
                and number.kind in (INT, FLOAT)
                and not self._is(self._peek(1), PUNCT, "[")
                and not self._is(self._peek(1), PUNCT, ".")
            ):
                # A signed literal is one constant, so -9223372036854775808 is in range.
                self._next()
                assert isinstance(number.value, int | float)
                return self._number(Literal(tok.pos, number.kind, -number.value))
            self._enter(tok.pos)
            operand = self._unary()
            self._nesting -= 1
            return self._checked(Unary(tok.pos, tok.text, operand))
        return self._postfix()

    def _number(self, node: Literal) -> Literal:
        if node.kind == "int":
            value = node.value
            assert isinstance(value, int)
            if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
                raise self._error("integer literal out of INT64 range", node.pos)
        return node

    def _postfix(self) -> Node:
        node = self._primary()
        while True:
            tok = self._peek()
            if self._is(tok, PUNCT, "["):
                self._next()
                self._enter(tok.pos)
                key = self._binary(1)
                self._nesting -= 1
                self._expect(PUNCT, "]", '"]"')
                node = self._checked(Index(node.pos, node, key))
            elif self._is(tok, PUNCT, "."):
                self._next()
                name = self._next()
                if name.kind != IDENT:
                    raise self._error(f"expected a method name after '.', found {_describe(name)}", name.pos)
                if not self._is(self._peek(), PUNCT, "("):
                    raise self._error(
                        "only attribute names contain '.'; a '.' after an expression starts a method call",
                        name.pos,
                    )
                args = self._arguments()
                node = self._checked(Call(node.pos, name.text, name.pos, node, args))
            else:
                return node

    def _arguments(self) -> list[Node]:
        open_tok = self._expect(PUNCT, "(", '"("')
        self._enter(open_tok.pos)
        args: list[Node] = []
        if self._is(self._peek(), PUNCT, ")"):
            self._next()
        else:
            while True:
                args.append(self._binary(1))
                tok = self._next()
                if self._is(tok, PUNCT, ")"):
                    break
                if not self._is(tok, PUNCT, ","):
                    raise self._error(f'expected "," or ")", found {_describe(tok)}', tok.pos)
        self._nesting -= 1
        return args

    def _primary(self) -> Node:
        tok = self._next()
        if tok.kind == IDENT:
            return self._name(tok)
        if tok.kind == INT:
            assert isinstance(tok.value, int)
            return self._number(Literal(tok.pos, "int", tok.value))
        if tok.kind == FLOAT:
            assert isinstance(tok.value, float)
            return Literal(tok.pos, "float", tok.value)
        if tok.kind == STRING:
            assert isinstance(tok.value, str)
            return Literal(tok.pos, "string", tok.value)
        if self._is(tok, PUNCT, "("):
            self._enter(tok.pos)
            inner = self._binary(1)
            self._nesting -= 1
            self._expect(PUNCT, ")", '")"')
            return inner
        if tok.kind == EOF:
            raise self._error("unexpected end of expression", tok.pos)
        raise self._error(f"unexpected {_describe(tok)}", tok.pos)

    def _name(self, first: Token) -> Node:
        # Dotted segments belong to the attribute name unless the segment is followed by "(",
        # which makes it a method on the name before it: request.path.startsWith("/").
        parts = [first.text]
        while (
            self._is(self._peek(), PUNCT, ".")
            and self._peek(1).kind == IDENT
            and not self._is(self._peek(2), PUNCT, "(")
        ):
            self._next()
            parts.append(self._next().text)
        if len(parts) == 1:
            if self._is(self._peek(), PUNCT, "("):
                return self._checked(Call(first.pos, first.text, first.pos, None, self._arguments()))
            if first.text in ("true", "false"):
                return Literal(first.pos, "bool", first.text == "true")
        return Attribute(first.pos, ".".join(parts))


def _describe(tok: Token) -> str:
    if tok.kind == EOF:
        return "end of expression"
    if tok.kind in (IDENT, INT, FLOAT, STRING):
        return f"{tok.kind} {tok.text}"
    return f'"{tok.text}"'
