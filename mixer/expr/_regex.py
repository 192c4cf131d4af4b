"""RE2 patterns on Python's ``re``: reject what RE2 lacks, translate what differs.

Mixer evaluated ``matches`` with Go's regexp (RE2). A pattern accepted here must mean the same as in
Go, so constructs ``re`` has and RE2 lacks (backreferences, lookaround, possessive and atomic groups,
conditionals) are errors instead of silently working.
"""

from __future__ import annotations

import re
from typing import Final

from mixer.cache import ByteLRU

_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_FLAGS: Final = frozenset("imsU")


class RegexError(ValueError):
    """The pattern is not valid RE2 (or uses RE2 syntax this implementation does not support)."""


def translate(pattern: str) -> str:
    """The Python ``re`` pattern (compiled with re.ASCII) that matches what RE2 ``pattern`` matches."""
    out: list[str] = []
    multiline = False
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise RegexError("trailing backslash")
            esc = pattern[i + 1]
            if esc.isdigit() and esc != "0":
                raise RegexError(f"backreference \\{esc} is not supported by RE2")
            if esc == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if esc == "z":
                out.append("\\Z")
            elif esc in "ZGC" or esc in "pP":
                raise RegexError(f"\\{esc} is not supported")
            elif esc == "x" and pattern.startswith("{", i + 2):
                end = pattern.find("}", i + 3)
                digits = pattern[i + 3 : end] if end >= 0 else ""
                try:
                    code = int(digits, 16)
                    char = chr(code)
                except (ValueError, OverflowError):
                    raise RegexError(f"invalid \\x{{{digits}}} escape") from None
                out.append(re.escape(char))
                i = end + 1
                continue
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end >= 0 else ""
                if name.startswith("^"):
                    raise RegexError(f"negated class [:{name}:] is not supported")
                if name not in _POSIX_CLASSES:
                    raise RegexError(f"unknown character class [:{name}:]")
                out.append(_POSIX_CLASSES[name])
                i = end + 2
                continue
            if ch == "[" or ch in "&~|" or (ch == "-" and out[-1] == "-"):
                # Python warns about (and may one day change) "[" and doubled "&&", "~~", "||", "--"
                # inside a class (future set operations); escaped, they are literals in both dialects.
                out.append("\\" + ch)
            else:
                if ch == "]":
                    in_class = False
                out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                # A "]" first in a class is a literal in both dialects.
                out.append("\\]")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?", i):
            i = _group_prefix(pattern, i, out)
            if "m" in out[-1] and not out[-1].startswith("(?P"):
                multiline = True
            continue
        if ch in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise RegexError("possessive quantifiers are not supported by RE2")
        if ch == "$":
            out.append("$" if multiline else "\\Z")
            i += 1
            continue
        out.append(ch)
        i += 1
    if in_class:
        raise RegexError("missing closing ]")
    return "".join(out)


def _group_prefix(pattern: str, i: int, out: list[str]) -> int:
    rest = pattern[i + 2 :]
    if rest.startswith(("=", "!", "<=", "<!")):
        raise RegexError("lookaround assertions are not supported by RE2")
    if rest.startswith(">"):
        raise RegexError("atomic groups are not supported by RE2")
    if rest.startswith("("):
        raise RegexError("conditional groups are not supported by RE2")
    if rest.startswith("P="):
        raise RegexError("backreferences are not supported by RE2")
    if rest.startswith(("P<", "<")):
        start = i + 2 + (2 if rest.startswith("P<") else 1)
        end = pattern.find(">", start)
        if end < 0:
            raise RegexError("unterminated group name")
        out.append(f"(?P<{pattern[start:end]}>")
        return end + 1
    j = i + 2
    while j < len(pattern) and pattern[j] in _FLAGS | {"-"}:
        j += 1
    flags = pattern[i + 2 : j]
    if j >= len(pattern) or pattern[j] not in ":)" or (not flags and pattern[j] == ")"):
        raise RegexError(f"invalid or unsupported group syntax {pattern[i : j + 1]!r}")
    if "U" in flags:
        raise RegexError("the U (ungreedy) flag is not supported")
    if pattern[j] == ")" and i != 0:
        # Python accepts inline flags only at the very start; RE2 scopes them to the enclosing group.
        raise RegexError("flags are supported only at the start of the pattern or as (?flags:...)")
    out.append(pattern[i : j + 1])
    return j + 1


def compile_re2(pattern: str) -> re.Pattern[str]:
    """A compiled search pattern for RE2 ``pattern``; cached for patterns only known at run time.

    The cache is bounded in bytes: a pattern may come from a request, and may be long.
    """
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        translated = translate(pattern)
        try:
            compiled = re.compile(translated, re.ASCII)
        except re.error as exc:
            raise RegexError(str(exc)) from None
        _COMPILED.put(pattern, compiled)
    return compiled


def _compiled_size(pattern: str, compiled: re.Pattern[str]) -> int:
    # A compiled pattern takes several times its text; the factor errs on the high side.
    return 8 * len(pattern) + 1000


_COMPILED: ByteLRU[str, re.Pattern[str]] = ByteLRU(
    4 * 1024 * 1024, max_entries=256, size=_compiled_size, name="expr.runtime_patterns"
)
