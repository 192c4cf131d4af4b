"""The elasticsearch adapter's params."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mixer.delivery import DeliveryOptions
from mixer.params import PositiveDuration
from mixer.redact import FieldRedaction

__all__ = [
    "DEFAULT_HOSTS",
    "DEFAULT_INDEX",
    "DEFAULT_TEMPLATE_BODY",
    "DEFAULT_TEMPLATE_PRIORITY",
    "ElasticsearchConfig",
    "IndexTemplateOptions",
    "TlsOptions",
    "index_name_problem",
]

MiB = 1024 * 1024
DEFAULT_HOSTS = ("http://127.0.0.1:9200",)
#: One index per day, named from the instance's timestamp (UTC).
DEFAULT_INDEX = "mixer-accesslog-%Y.%m.%d"
#: Above the priority 100 of Elasticsearch's built-in ``logs-*-*`` and ``metrics-*-*`` templates.
DEFAULT_TEMPLATE_PRIORITY = 200
#: Elasticsearch refuses request bodies past ``http.max_content_length``, 100 MB by default.
MAX_BULK_BYTES = 100 * MiB

#: The mappings and settings installed when ``index_template.body`` is not given: the time
#: fields as dates and every other string as a keyword (access log fields are filtered and
#: aggregated on, rarely searched as full text).
DEFAULT_TEMPLATE_BODY: dict[str, Any] = {
    "mappings": {
        "dynamic_templates": [
            {
                "strings_as_keywords": {
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024},
                }
            }
        ],
        "properties": {
            "@timestamp": {"type": "date"},
            "time": {"type": "date"},
            "start_time": {"type": "date"},
            "end_time": {"type": "date"},
        },
    }
}

# A date whose month and day names have capitals, so that %b or %a in a pattern gives an
# uppercase (invalid) index name when the pattern is checked.
_SAMPLE_TIME = datetime(2024, 12, 31, 23, 59, 58, tzinfo=UTC)
_INVALID_INDEX_CHARS = frozenset('\\/*?"<>| ,#:')


def index_name_problem(name: str) -> str | None:
    """Why Elasticsearch would refuse ``name`` as an index or data stream name, or None."""
    if not name:
        return "it is empty"
    if name != name.lower():
        return "it has uppercase letters"
    if name in {".", ".."}:
        return "it is '.' or '..'"
    if name[0] in "-_+":
        return "it starts with '-', '_' or '+'"
    bad = sorted(set(name) & _INVALID_INDEX_CHARS)
    if bad:
        return f"it contains {' '.join(repr(c) for c in bad)}"
    if len(name.encode()) > 255:
        return "it is longer than 255 bytes"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsOptions(_Model):
    """Verification of the servers' certificates (for ``https://`` hosts)."""

    ca_file: Path | None = Field(
        default=None, description="PEM file of the CA certificates to trust; unset, the system's trust store."
    )
    verify: bool = Field(
        default=True,
        description=(
            "False accepts any certificate: for tests only, it gives up protection against interception."
        ),
    )


class IndexTemplateOptions(_Model):
    """The composable index template installed at start (``PUT _index_template/<name>``)."""

    install: bool = Field(
        default=True, description="Install (or update) the index template when the handler starts."
    )
    name: str | None = Field(
        default=None,
        description="Default: the data stream name, or the index pattern's text before its first ``%``.",
    )
    index_patterns: list[str] | None = Field(
        default=None,
        description=(
            "Default: the data stream name, or the index pattern's text before its first ``%``, plus ``*``."
        ),
    )
    priority: int = Field(
        default=DEFAULT_TEMPLATE_PRIORITY,
        ge=0,
        description="The template's priority among the composable templates matching the same indices.",
    )
    body: dict[str, Any] | None = Field(
        default=None,
        description=(
            "The template's ``settings``, ``mappings`` and ``aliases``; default "
            ":data:`DEFAULT_TEMPLATE_BODY`."
        ),
    )

    @field_validator("body")
    @classmethod
    def _body_keys(cls, body: dict[str, Any] | None) -> dict[str, Any] | None:
        if body is not None:
            unknown = sorted(set(body) - {"settings", "mappings", "aliases", "lifecycle"})
            if unknown:
                raise ValueError(
                    f"body takes the template's settings, mappings, aliases and lifecycle, not {unknown}; "
                    "index_patterns and priority are params of their own"
                )
        return body


class ElasticsearchConfig(_Model):
    """Params of an ``elasticsearch`` handler."""

    hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HOSTS),
        min_length=1,
        description=(
            "Node URLs (``http://`` or ``https://``, optionally with a path prefix); sends fail over "
            "between them."
        ),
    )
    index: str = Field(
        default=DEFAULT_INDEX,
        description=(
            "strftime pattern over the instance's timestamp (UTC) naming the index each document goes to."
        ),
    )
    data_stream: str | None = Field(
        default=None,
        description=(
            "Write to this data stream instead of ``index`` (``create`` ops; needs a data stream template)."
        ),
    )
    index_template: IndexTemplateOptions = Field(
        default=IndexTemplateOptions(), description="The composable index template installed at start."
    )
    username: str | None = Field(
        default=None, description="User for HTTP basic authentication (with ``password``)."
    )
    password: SecretStr | None = Field(
        default=None, description="Password for HTTP basic authentication; shown redacted."
    )
    api_key: SecretStr | None = Field(
        default=None, description="The base64 ``id:api_key`` credential Elasticsearch returns as ``encoded``."
    )
    tls: TlsOptions = Field(
        default=TlsOptions(),
        description="How the servers' certificates are verified (for ``https://`` hosts).",
    )
    redact: FieldRedaction | None = Field(
        default=None,
        description="Fields of each document hashed, masked or dropped before it is sent (e.g. API keys).",
    )
    pipeline: str | None = Field(default=None, description="An ingest pipeline every document goes through.")
    bulk_max_records: int = Field(
        default=1000,
        gt=0,
        description="A delivery batch is cut into ``_bulk`` requests of at most this many documents ...",
    )
    bulk_max_bytes: int = Field(
        default=5 * MiB,
        gt=0,
        le=MAX_BULK_BYTES,
        description="... and at most this many bytes of NDJSON body (a larger single document goes alone).",
    )
    request_timeout: PositiveDuration = Field(
        default=timedelta(seconds=10),
        description="Per HTTP request; ``delivery.send_timeout`` bounds a whole batch.",
    )
    delivery: DeliveryOptions = Field(
        default=DeliveryOptions(),
        description="Queueing, batching, retry and spooling (see docs/delivery.md).",
    )

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            parts = urlsplit(host)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError(f"{host!r} is not an http:// or https:// URL with a host")
            if parts.username or parts.password:
                raise ValueError(
                    f"{host!r}: give credentials as username/password or api_key, not in the URL"
                )
            if parts.query or parts.fragment:
                raise ValueError(f"{host!r}: a host URL takes no query or fragment")
            try:
                parts.port  # noqa: B018 - raises on a port that is not a number
            except ValueError as exc:
                raise ValueError(f"{host!r}: {exc}") from None
        return hosts

    @field_validator("index")
    @classmethod
    def _index(cls, pattern: str) -> str:
        try:
            sample = _SAMPLE_TIME.strftime(pattern)
        except ValueError as exc:
            raise ValueError(f"index pattern {pattern!r}: {exc}") from None
        problem = index_name_problem(sample)
        if problem is not None:
            raise ValueError(
                f"index pattern {pattern!r} gives {sample!r}, which Elasticsearch refuses: {problem}"
            )
        return pattern

    @field_validator("data_stream")
    @classmethod
    def _data_stream(cls, name: str | None) -> str | None:
        if name is None:
            return None
        if "%" in name:
            raise ValueError(f"data_stream {name!r} is a name, not a pattern: Elasticsearch rolls it over")
        problem = index_name_problem(name) or ("it starts with '.ds-'" if name.startswith(".ds-") else None)
        if problem is not None:
            raise ValueError(f"data stream name {name!r} is refused by Elasticsearch: {problem}")
        return name

    @model_validator(mode="after")
    def _check(self) -> ElasticsearchConfig:
        if self.data_stream is not None and "index" in self.model_fields_set:
            raise ValueError("give index or data_stream, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.api_key is not None and self.username is not None:
            raise ValueError("give username/password or api_key, not both")
        schemes = {urlsplit(host).scheme for host in self.hosts}
        tls_set = "ca_file" in self.tls.model_fields_set or "verify" in self.tls.model_fields_set
        if tls_set and schemes != {"https"}:
            raise ValueError("tls settings need every host to be an https:// URL")
        template = self.index_template
        if (
            template.install
            and not self.target_prefix
            and (template.name is None or template.index_patterns is None)
        ):
            raise ValueError(
                f"index pattern {self.index!r} starts with a directive: give index_template a name and "
                "index_patterns, or install: false"
            )
        if template.name is not None:
            problem = index_name_problem(template.name)
            if problem is not None:
                raise ValueError(
                    f"index_template name {template.name!r} is refused by Elasticsearch: {problem}"
                )
        return self

    @property
    def uses_tls(self) -> bool:
        return all(urlsplit(host).scheme == "https" for host in self.hosts)

    @property
    def target_prefix(self) -> str:
        """The data stream name, or the index pattern's fixed text before its first directive."""
        if self.data_stream is not None:
            return self.data_stream
        return self.index.split("%", 1)[0]

    @property
    def template_name(self) -> str:
        if self.index_template.name is not None:
            return self.index_template.name
        return self.target_prefix.rstrip("-_.") or self.target_prefix

    @property
    def template_patterns(self) -> list[str]:
        if self.index_template.index_patterns is not None:
            return list(self.index_template.index_patterns)
        if self.data_stream is not None:
            return [self.data_stream]
        return [f"{self.target_prefix}*"]

    def template_request(self) -> dict[str, Any]:
        """The body of ``PUT _index_template/<template_name>``."""
        body = self.index_template.body if self.index_template.body is not None else DEFAULT_TEMPLATE_BODY
        request: dict[str, Any] = {
            "index_patterns": self.template_patterns,
            "priority": self.index_template.priority,
            "template": body,
            "_meta": {"managed_by": "mesh-mixer"},
        }
        if self.data_stream is not None:
            request["data_stream"] = {}
        return request
