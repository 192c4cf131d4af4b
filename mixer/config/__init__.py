"""Configuration: Mixer-style YAML documents loaded, validated and compiled into a :class:`ValidatedConfig`.

Load with :func:`load_config` (files and directories) or :func:`load_config_text` (one text,
such as the embedded default). Every problem in a load is reported at once in a
:class:`ConfigError`; a successful load has every expression compiled and every reference
resolved, and is what the runtime is built from. See docs/config.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mixer.attributes import ISTIO_MANIFEST, AttributeManifest
from mixer.config._bindings import OUTPUT_PREFIX
from mixer.config._errors import ConfigError, ConfigIssue, IssueList
from mixer.config._instances import CompiledInstanceBuilder, compile_instance
from mixer.config._loader import ConfigCompiler
from mixer.config._model import (
    DEFAULT_CONFIG_NAMESPACE,
    ActionConfig,
    HandlerConfig,
    HeaderOperationConfig,
    InstanceBuilder,
    InstanceConfig,
    RuleConfig,
    SamplingConfig,
    SourceRef,
    ValidatedConfig,
)
from mixer.config._redact import redacted
from mixer.config._source import (
    MAX_DOCUMENTS,
    MAX_FILE_BYTES,
    DocumentBudget,
    RawDocument,
    _collect_files,
    config_files,
    read_file,
    read_text,
)
from mixer.decision import HeaderOperationKind
from mixer.registry import Registry

__all__ = [
    "DEFAULT_CONFIG_NAMESPACE",
    "MAX_DOCUMENTS",
    "MAX_FILE_BYTES",
    "OUTPUT_PREFIX",
    "ActionConfig",
    "CompiledInstanceBuilder",
    "ConfigError",
    "ConfigIssue",
    "HandlerConfig",
    "HeaderOperationConfig",
    "HeaderOperationKind",
    "InstanceBuilder",
    "InstanceConfig",
    "RuleConfig",
    "SamplingConfig",
    "SourceRef",
    "ValidatedConfig",
    "compile_instance",
    "config_files",
    "load_config",
    "load_config_text",
    "redacted",
]


def load_config(
    paths: Sequence[str | Path],
    registry: Registry,
    *,
    environ: Mapping[str, str] | None = None,
    base_manifest: AttributeManifest = ISTIO_MANIFEST,
) -> ValidatedConfig:
    """Loads and validates the config in ``paths`` (files, and directories searched for YAML).

    ``environ`` supplies ``${VAR}`` substitutions (default: the process environment);
    ``base_manifest`` is the attribute vocabulary that attributemanifest documents extend.

    :raises ConfigError: with every problem found, each naming its file, document and field.
    """
    issues = IssueList()
    env = os.environ if environ is None else environ
    budget = DocumentBudget.new()
    documents: list[RawDocument] = []
    files = _collect_files(paths, issues)
    for path in files:
        documents.extend(read_file(path, issues, env, budget))
    return _compile(documents, registry, base_manifest, issues, [str(path) for path in files])


def load_config_text(
    text: str,
    registry: Registry,
    *,
    source_name: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_manifest: AttributeManifest = ISTIO_MANIFEST,
) -> ValidatedConfig:
    """Like :func:`load_config` for one YAML text; errors name it ``source_name``.

    :raises ConfigError: with every problem found.
    """
    issues = IssueList()
    env = os.environ if environ is None else environ
    documents = read_text(text, source_name, issues, env, DocumentBudget.new())
    return _compile(documents, registry, base_manifest, issues, [source_name])


def _compile(
    documents: list[RawDocument],
    registry: Registry,
    base_manifest: AttributeManifest,
    issues: IssueList,
    files: list[str],
) -> ValidatedConfig:
    config = ConfigCompiler(registry, base_manifest, issues).compile(documents)
    order = {name: i for i, name in enumerate(files)}
    # Each phase reports across all documents; present the issues in file and document order.
    issues.issues.sort(key=lambda issue: (order.get(issue.source.file, -1), issue.source.document))
    issues.raise_if_any()
    assert config is not None
    return config
