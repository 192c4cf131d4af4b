"""Tokenizer for CEXL: Go's lexical rules, restricted to what expressions use."""

from __future__ import annotations

from typing import Final

from mixer.expr._errors import ExpressionSyntaxError

#: Longer than any expression a config holds; bounds the work one bad document can cause.
MAX_TEXT_LENGTH: Final = 4096

IDENT: Final = "ident"
INT: Final = "int"
FLOAT: Final = "float"
STRING: Final = "string"
OP: Final = "op"
PUNCT: Final = "punct"
EOF: Final = "eof"

_TWO_CHAR_OPS: Final = frozenset({"||", "&&", "==", "!=", "<=", ">="})
_ONE_CHAR_OPS: Final = frozenset({"<", ">", "+", "-", "*", "/", "|", "!"})
_PUNCT: Final = frozenset({"(", ")", "[", "]", ",", "."})
# Go operators the language leaves out: named so the error says so rather than "unexpected character".
_UNSUPPORTED_OPS: Final = ("<<", ">>", "&^", "&", "^", "%", "=", ":", "?", "~")
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_WHITESPACE: Final = frozenset(" \t\n\r")


class Token:
    __slots__ = ("kind", "pos", "text", "value")

    def __init__(self, kind: str, text: str, pos: int, value: object = None) -> None:
        self.kind = kind
        self.text = text
        self.pos = pos
        self.value = value

    def __repr__(self) -> str:
        return f"Token({self.kind}, {self.text!r}, {self.pos})"


def _is_ident_start(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_digit(ch: str) -> bool:
    # str.isdigit() accepts any Unicode digit; Go numbers are ASCII.
    return "0" <= ch <= "9"


def _is_ident_char(ch: str) -> bool:
    return _is_ident_start(ch) or ("0" <= ch <= "9")


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an EOF token.

    :raises ExpressionSyntaxError: the text is too long or holds something that is not a token.
    """
    if len(text) > MAX_TEXT_LENGTH:
        raise ExpressionSyntaxError(
            f"expression is longer than {MAX_TEXT_LENGTH} characters", MAX_TEXT_LENGTH, text
        )
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
            continue
        start = i
        if _is_ident_start(ch):
            while i < n and _is_ident_char(text[i]):
                i += 1
            tokens.append(Token(IDENT, text[start:i], start))
        elif _is_digit(ch) or (ch == "." and i + 1 < n and _is_digit(text[i + 1])):
            i, token = _number(text, i)
            tokens.append(token)
        elif ch == '"':
            i, value = _string(text, i)
            tokens.append(Token(STRING, text[start:i], start, value))
        elif ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ExpressionSyntaxError("unterminated raw string", start, text)
            i = end + 1
            # Go drops carriage returns from raw strings.
            tokens.append(Token(STRING, text[start:i], start, text[start + 1 : end].replace("\r", "")))
        elif text.startswith(tuple(_TWO_CHAR_OPS), i):
            tokens.append(Token(OP, text[i : i + 2], start))
            i += 2
        elif text.startswith(_UNSUPPORTED_OPS, i):
            op = next(o for o in _UNSUPPORTED_OPS if text.startswith(o, i))
            hint = '; use "==" to compare' if op == "=" else ""
            raise ExpressionSyntaxError(f'unsupported operator "{op}"{hint}', start, text)
        elif ch in _ONE_CHAR_OPS:
            tokens.append(Token(OP, ch, start))
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token(PUNCT, ch, start))
            i += 1
        elif ch == "'":
            raise ExpressionSyntaxError(
                "strings use double quotes or backquotes, not single quotes", start, text
            )
        else:
            raise ExpressionSyntaxError(f"unexpected character {ch!r}", start, text)
    tokens.append(Token(EOF, "", n))
    return tokens


def _digits(text: str, i: int, allowed: str) -> int:
    n = len(text)
    while i < n and text[i] in allowed:
        i += 1
    return i


def _number(text: str, start: int) -> tuple[int, Token]:
    n = len(text)
    dec = "0123456789"
    if text.startswith(("0x", "0X", "0o", "0O", "0b", "0B"), start):
        base = {"x": 16, "o": 8, "b": 2}[text[start + 1].lower()]
        allowed = {16: "0123456789abcdefABCDEF", 8: "01234567", 2: "01"}[base]
        i = _digits(text, start + 2, allowed)
        if i == start + 2:
            raise ExpressionSyntaxError("malformed number", start, text)
        i = _check_number_end(text, i, start)
        return i, Token(INT, text[start:i], start, int(text[start + 2 : i], base))
    i = _digits(text, start, dec)
    is_float = False
    if i < n and text[i] == "." and not (i + 1 < n and _is_ident_start(text[i + 1])):
        # "1.5" is a float; "1.startsWith" is not a number followed by a method, it is an error below.
        is_float = True
        i = _digits(text, i + 1, dec)
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        k = _digits(text, j, dec)
        if k == j:
            raise ExpressionSyntaxError("malformed exponent", start, text)
        is_float = True
        i = k
    i = _check_number_end(text, i, start)
    literal = text[start:i]
    if is_float:
        return i, Token(FLOAT, literal, start, float(literal))
    if len(literal) > 1 and literal[0] == "0":
        # Go reads a leading zero as octal; do the same so a value means what it would in Istio.
        if any(c not in "01234567" for c in literal):
            raise ExpressionSyntaxError(f"invalid digit in octal literal {literal}", start, text)
        return i, Token(INT, literal, start, int(literal, 8))
    return i, Token(INT, literal, start, int(literal))


def _check_number_end(text: str, i: int, start: int) -> int:
    if i < len(text) and (_is_ident_char(text[i]) or text[i] == "."):
        raise ExpressionSyntaxError("malformed number", start, text)
    return i


def _string(text: str, start: int) -> tuple[int, str]:
    """Decode the double-quoted Go string literal at ``start``; returns the end offset and the value."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while True:
        if i >= n:
            raise ExpressionSyntaxError("unterminated string", start, text)
        ch = text[i]
        if ch == '"':
            return i + 1, "".join(out)
        if ch == "\n":
            raise ExpressionSyntaxError("newline in string", start, text)
        if ch != "\\":
            j = text.find('"', i)
            k = text.find("\\", i)
            m = text.find("\n", i)
            stop = min(x for x in (j, k, m, n) if x >= 0)
            out.append(text[i:stop])
            i = stop
            continue
        if i + 1 >= n:
            raise ExpressionSyntaxError("unterminated string", start, text)
        esc = text[i + 1]
        simple = _SIMPLE_ESCAPES.get(esc)
        if simple is not None:
            out.append(simple)
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or any(c not in _HEX for c in digits):
                raise ExpressionSyntaxError(f"invalid \\{esc} escape", i, text)
            code = int(digits, 16)
            _check_code_point(code, esc, i, text)
            out.append(chr(code))
            i += 2 + width
        elif esc in "01234567":
            digits = text[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                raise ExpressionSyntaxError("invalid octal escape", i, text)
            code = int(digits, 8)
            _check_code_point(code, "0", i, text)
            out.append(chr(code))
            i += 4
        else:
            raise ExpressionSyntaxError(f"invalid escape \\{esc}", i, text)


def _check_code_point(code: int, esc: str, pos: int, text: str) -> None:
    if esc in "x0" and code > 0x7F:
        # Go's \x and octal escapes are raw bytes; above 0x7F they would build invalid UTF-8.
        raise ExpressionSyntaxError("byte escape above \\x7f is not valid text", pos, text)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise ExpressionSyntaxError("escape is not a valid Unicode code point", pos, text)
