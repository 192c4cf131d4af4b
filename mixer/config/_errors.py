"""Configuration errors: every problem found in one load, each with where it was found."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mixer.config._model import SourceRef


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: where (``source``: file, document, field path), what object, and what is wrong.

    ``subject`` names the object the document defines (``instance requestcount.istio-system``)
    when it is known; ``line`` is set for YAML syntax errors, which have no document structure.
    """

    source: SourceRef
    message: str
    subject: str = ""
    line: int | None = None

    def __str__(self) -> str:
        parts = [self.source.file]
        if self.source.document:
            doc = f"document {self.source.document}"
            parts.append(f"{doc} ({self.subject})" if self.subject else doc)
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.source.path:
            parts.append(self.source.path)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigError(Exception):
    """A configuration is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.issues) == 1:
            return str(self.issues[0])
        lines = [f"{len(self.issues)} configuration errors:"]
        lines.extend(f"  {issue}" for issue in self.issues)
        return "\n".join(lines)


class IssueList:
    """Collects issues across all phases of a load so they are reported together."""

    __slots__ = ("issues",)

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def add(
        self, source: SourceRef, message: str, *, path: str = "", subject: str = "", line: int | None = None
    ) -> None:
        if path:
            source = SourceRef(source.file, source.document, join_path(source.path, path))
        self.issues.append(ConfigIssue(source, message, subject, line))

    def __bool__(self) -> bool:
        return bool(self.issues)

    def __len__(self) -> int:
        return len(self.issues)

    def raise_if_any(self) -> None:
        if self.issues:
            raise ConfigError(self.issues)


def join_path(prefix: str, path: str) -> str:
    """``spec`` + ``params`` -> ``spec.params``; ``spec.metrics`` + ``[0]`` -> ``spec.metrics[0]``."""
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def loc_path(loc: Iterable[int | str]) -> str:
    """A pydantic error location as a field path: ``("metrics", 0, "name")`` -> ``metrics[0].name``."""
    path = ""
    for part in loc:
        path = join_path(path, f"[{part}]" if isinstance(part, int) else str(part))
    return path
