"""CEXL, the Mixer attribute expression language: compile once against a manifest, evaluate per request.

See docs/expressions.md for the language reference.
"""

from __future__ import annotations

from mixer.expr._compiler import CompiledExpression, compile, evaluate, referenced_names
from mixer.expr._errors import (
    AbsentAttributeError,
    EvaluationError,
    ExpressionError,
    ExpressionSyntaxError,
    ExpressionTypeError,
)
from mixer.expr._regex import PatternCacheStats, Regex, RegexError, compile_re2, request_pattern_stats

__all__ = [
    "AbsentAttributeError",
    "CompiledExpression",
    "EvaluationError",
    "ExpressionError",
    "ExpressionSyntaxError",
    "ExpressionTypeError",
    "PatternCacheStats",
    "Regex",
    "RegexError",
    "compile",
    "compile_re2",
    "evaluate",
    "referenced_names",
    "request_pattern_stats",
]
