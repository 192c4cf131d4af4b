"""Reading config sources: files and directories, YAML documents, ``${VAR}`` substitution, size bounds."""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mixer.config._errors import IssueList, join_path
from mixer.config._model import SourceRef

#: Bounds that keep a malformed or hostile config from exhausting memory or time.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DOCUMENTS = 10_000
#: Values per document after YAML aliases are expanded (aliases can nest exponentially).
MAX_DOCUMENT_VALUES = 1_000_000
MAX_DEPTH = 64

CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass(slots=True)
class DocumentBudget:
    """How many more documents one load may read (shared by all its files)."""

    limit: int
    used: int = 0

    @classmethod
    def new(cls) -> DocumentBudget:
        return cls(MAX_DOCUMENTS)


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One parsed, substituted document; ``source.path`` is the prefix of every field path in it."""

    source: SourceRef
    body: Any


def config_files(paths: Sequence[str | Path]) -> list[Path]:
    """The config files ``paths`` name: files as given, directories searched recursively.

    Directories contribute ``*.yaml`` and ``*.yml`` files, sorted by path; entries whose names
    start with ``.`` are skipped, so a Kubernetes ConfigMap volume (``..data`` links beside the
    real files) is read once. Each file appears once, in the order first found.

    :raises ConfigError: a path does not exist.
    """
    issues = IssueList()
    files = _collect_files(paths, issues)
    issues.raise_if_any()
    return files


def _collect_files(paths: Sequence[str | Path], issues: IssueList) -> list[Path]:
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in _walk(path):
                add(file)
        elif path.is_file():
            add(path)
        elif path.exists():
            issues.add(SourceRef(str(path), 0), "not a regular file or directory")
        else:
            issues.add(SourceRef(str(path), 0), "no such file or directory")
    return found


def _walk(root: Path) -> Iterator[Path]:
    collected: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        collected.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and name.endswith(CONFIG_SUFFIXES)
        )
    yield from sorted(collected)


def read_file(
    path: Path, issues: IssueList, environ: Mapping[str, str], budget: DocumentBudget
) -> list[RawDocument]:
    """The documents of one file; problems go to ``issues``."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            issues.add(SourceRef(name, 0), f"file is {size} bytes, more than the limit of {MAX_FILE_BYTES}")
            return []
        with path.open("rb") as handle:
            # The size can change between stat and read; never read past the bound.
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        issues.add(SourceRef(name, 0), f"cannot read: {exc.strerror or exc}")
        return []
    if len(data) > MAX_FILE_BYTES:
        issues.add(SourceRef(name, 0), f"file is more than the limit of {MAX_FILE_BYTES} bytes")
        return []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        issues.add(SourceRef(name, 0), f"not UTF-8 text (byte {exc.start})")
        return []
    return read_text(text, name, issues, environ, budget)


def read_text(
    text: str, name: str, issues: IssueList, environ: Mapping[str, str], budget: DocumentBudget
) -> list[RawDocument]:
    if len(text) > MAX_FILE_BYTES:
        issues.add(SourceRef(name, 0), f"text is more than the limit of {MAX_FILE_BYTES} characters")
        return []
    documents: list[RawDocument] = []
    number = 0
    try:
        for body in yaml.load_all(text, Loader=_StrictLoader):  # a SafeLoader subclass: no arbitrary objects
            number += 1
            if body is None:
                continue
            if budget.used >= budget.limit:
                issues.add(SourceRef(name, number), f"more than {budget.limit} documents")
                break
            budget.used += 1
            source = SourceRef(name, number)
            expanded = _Substitution(source, issues, environ).walk(body)
            if expanded is not _FAILED:
                documents.append(RawDocument(source, expanded))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        issues.add(SourceRef(name, number + 1), f"YAML syntax error: {problem}", line=_line(mark))
    except yaml.YAMLError as exc:
        issues.add(SourceRef(name, number + 1), f"YAML error: {exc}")
    except RecursionError:
        issues.add(SourceRef(name, number + 1), "YAML nesting is too deep")
    return documents


def _line(mark: yaml.Mark | None) -> int | None:
    return None if mark is None else mark.line + 1


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key repeated in one mapping is an error, not a silent override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: the base constructor reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_FAILED: Any = object()
_REFERENCE = re.compile(r"\$(\$|\{[^}]*\}?)")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class _Substitution:
    """Copies a document, replacing ``${VAR}`` / ``${VAR:-default}`` in string values (``$$`` is ``$``).

    The copy also bounds the document: aliases are expanded into plain values here, so the
    value count and depth limits apply to what later stages will actually walk.
    """

    def __init__(self, source: SourceRef, issues: IssueList, environ: Mapping[str, str]) -> None:
        self.source = source
        self.issues = issues
        self.environ = environ
        self.remaining = MAX_DOCUMENT_VALUES
        self.failed = False

    def walk(self, body: Any) -> Any:
        try:
            result = self._walk(body, "", 0)
        except _TooLarge as exc:
            self.issues.add(self.source, str(exc), path=exc.path)
            return _FAILED
        return _FAILED if self.failed else result

    def _walk(self, value: Any, path: str, depth: int) -> Any:
        self.remaining -= 1
        if self.remaining < 0:
            raise _TooLarge(
                path, f"document has more than {MAX_DOCUMENT_VALUES} values (nested YAML aliases?)"
            )
        if depth > MAX_DEPTH:
            raise _TooLarge(path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            return self._substitute(value, path) if "$" in value else value
        if isinstance(value, dict):
            return {k: self._walk(v, join_path(path, str(k)), depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, join_path(path, f"[{i}]"), depth + 1) for i, v in enumerate(value)]
        return value

    def _substitute(self, text: str, path: str) -> str:
        def replace(match: re.Match[str]) -> str:
            ref = match.group(1)
            if ref == "$":
                return "$"
            inner = _VARIABLE.fullmatch(ref[1:-1]) if ref.endswith("}") else None
            if inner is None:
                self._error(
                    path, f"malformed variable reference {match.group(0)!r} (write $$ for a literal $)"
                )
                return match.group(0)
            name, default = inner.group(1), inner.group(2)
            value = self.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self._error(path, f"environment variable {name} is not set and has no default")
                    return match.group(0)
                return default
            return value

        return _REFERENCE.sub(replace, text)

    def _error(self, path: str, message: str) -> None:
        self.failed = True
        self.issues.add(self.source, message, path=path)


class _TooLarge(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
