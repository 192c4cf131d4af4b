"""Everything ``mixer serve`` can be told, as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mixer.adapter import DeliveryAck
from mixer.api import ListenAddress
from mixer.server._tls import TlsSettings
from mixer.wire import (
    DEFAULT_MAX_ATTRIBUTES,
    DEFAULT_MAX_MAP_ENTRIES,
    DEFAULT_MAX_REPORT_RECORDS,
    DEFAULT_MAX_STRING_LENGTH,
)

#: istio.mixer.v1's conventional port, on loopback unless told otherwise.
DEFAULT_GRPC_LISTEN: Final = "127.0.0.1:9091"
DEFAULT_HTTP_LISTEN: Final = "127.0.0.1:9093"
#: /metrics, /config and the probes; loopback: what it shows is for operators, not for callers.
DEFAULT_ADMIN_LISTEN: Final = "127.0.0.1:9094"
DEFAULT_SHUTDOWN_TIMEOUT: Final = 15.0
#: gRPC's own default receive limit; a Report batch of 100 Istio 1.4 requests is about 60 KiB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
#: Requests decoded and dispatched at once, over all APIs; above it a call is refused UNAVAILABLE.
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 2048
DEFAULT_RELOAD_INTERVAL: Final = 2.0
#: The Istio 1.4 proxy's own call timeout: work past it is wasted on a caller that has given up.
DEFAULT_CHECK_TIMEOUT: Final = 5.0
#: Bytes of precondition answers kept per process (see mixer.runtime's check cache); 0: none.
DEFAULT_CHECK_CACHE_BYTES: Final = 16 * 1024 * 1024
#: Seconds between "not ready" (``/readyz`` 503, gRPC health NOT_SERVING) and refusing new calls.
#: 0 stops at once, right for a terminal, for tests and for Kubernetes with a preStop sleep; behind a
#: load balancer that polls readiness, set it to the time the balancer takes to notice (e.g. 5).
DEFAULT_DRAIN_DELAY: Final = 0.0

#: Open connections on the HTTP port; each costs about 14 KiB, and the process's file limit
#: (often 1024) must leave room for them.
DEFAULT_HTTP_MAX_CONNECTIONS: Final = 1000
#: How long a request's header may take to arrive (a slow-header client holds a connection).
DEFAULT_HTTP_HEADER_TIMEOUT: Final = 10.0
#: How long a request's body may take to arrive once its header has.
DEFAULT_HTTP_BODY_TIMEOUT: Final = 30.0

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("text", "json")
DELIVERY_ACKS: Final[tuple[DeliveryAck, ...]] = ("auto", "spool", "memory")
TLS_CLIENT_AUTH_MODES: Final = ("none", "optional", "require")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The settings of one ``mixer serve`` process (or, with ``workers`` > 1, of its supervisor).

    ``config_paths`` empty means the embedded default. ``reload_interval`` 0 turns the file
    watcher off (SIGHUP still reloads). ``syslog_listen`` set starts the syslog UDP input for
    nginx access logs (:mod:`mixer.api.syslog`). ``worker_index``, ``worker_restarts`` and ``parent_pid``
    are set only on the worker processes a supervisor starts.
    """

    config_paths: tuple[str, ...] = ()
    grpc_listen: str = DEFAULT_GRPC_LISTEN
    http_listen: str = DEFAULT_HTTP_LISTEN
    admin_listen: str = DEFAULT_ADMIN_LISTEN
    admin_token_file: Path | None = None
    syslog_listen: str | None = None
    workers: int = 1
    data_dir: Path | None = None
    ready_file: Path | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    reload_interval: float = DEFAULT_RELOAD_INTERVAL
    check_timeout: float = DEFAULT_CHECK_TIMEOUT
    check_cache_bytes: int = DEFAULT_CHECK_CACHE_BYTES
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES
    max_report_records: int = DEFAULT_MAX_REPORT_RECORDS
    delivery_ack: DeliveryAck = "auto"
    http_max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
    http_header_timeout: float = DEFAULT_HTTP_HEADER_TIMEOUT
    http_body_timeout: float = DEFAULT_HTTP_BODY_TIMEOUT
    drain_delay: float = DEFAULT_DRAIN_DELAY
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_client_auth: str = "none"
    tls_allowed_identities: tuple[str, ...] = ()
    worker_index: int | None = None
    worker_restarts: int = 0
    parent_pid: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.workers < 1:
            problems.append("--workers must be at least 1")
        if self.shutdown_timeout <= 0:
            problems.append("--shutdown-timeout must be positive")
        if self.max_message_size < 1024:
            problems.append("--max-message-size must be at least 1024 bytes")
        if self.max_concurrent_requests < 1:
            problems.append("--max-concurrent-requests must be at least 1")
        if self.reload_interval < 0:
            problems.append("--reload-interval must not be negative")
        if self.check_timeout <= 0:
            problems.append("--check-timeout must be positive")
        if self.check_cache_bytes < 0:
            problems.append("--check-cache-bytes must not be negative")
        if not 0 <= self.drain_delay <= 3600:
            problems.append("--drain-delay must be between 0 and 3600 seconds")
        for flag, value in (
            ("--max-attributes", self.max_attributes),
            ("--max-string-length", self.max_string_length),
            ("--max-map-entries", self.max_map_entries),
            ("--max-report-records", self.max_report_records),
        ):
            if value < 1:
                problems.append(f"{flag} must be at least 1")
        if self.syslog_listen is not None:
            try:
                syslog = ListenAddress.parse(self.syslog_listen)
            except ValueError as exc:
                problems.append(f"--syslog-listen: {exc}")
            else:
                # Workers share a fixed port; port 0 would give each worker a port nobody knows.
                if syslog.port == 0 and self.workers > 1:
                    problems.append("--syslog-listen needs a fixed port with --workers")
        try:
            ListenAddress.parse(self.admin_listen)
        except ValueError as exc:
            problems.append(f"--admin-listen: {exc}")
        if self.http_max_connections < 1:
            problems.append("--http-max-connections must be at least 1")
        if self.http_header_timeout <= 0:
            problems.append("--http-header-timeout must be positive")
        if self.http_body_timeout <= 0:
            problems.append("--http-body-timeout must be positive")
        if self.delivery_ack not in DELIVERY_ACKS:
            problems.append(f"--delivery-ack must be one of {', '.join(DELIVERY_ACKS)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together")
        if self.tls_client_auth not in TLS_CLIENT_AUTH_MODES:
            problems.append(f"--tls-client-auth must be one of {', '.join(TLS_CLIENT_AUTH_MODES)}")
        elif self.tls_client_auth != "none" and self.tls_client_ca is None:
            problems.append(f"--tls-client-auth {self.tls_client_auth} needs --tls-client-ca")
        if self.tls_cert is None and (
            self.tls_client_ca is not None or self.tls_client_auth != "none" or self.tls_allowed_identities
        ):
            problems.append("--tls-client-ca, --tls-client-auth and --tls-allowed-identities need --tls-cert")
        if self.tls_allowed_identities and self.tls_client_auth == "none":
            problems.append("--tls-allowed-identities needs --tls-client-auth optional or require")
        if self.log_level.upper() not in LOG_LEVELS:
            problems.append(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def tls_settings(self) -> TlsSettings | None:
        """The listeners' TLS settings; None for plaintext."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return TlsSettings(
            self.tls_cert,
            self.tls_key,
            self.tls_client_ca,
            self.tls_client_auth,
            self.tls_allowed_identities,
        )

    @property
    def embedded(self) -> bool:
        """Whether the server runs the embedded default config."""
        return not self.config_paths

    def to_argv(self) -> list[str]:
        """The ``mixer serve`` arguments that give these options back (workers re-exec with them)."""
        argv: list[str] = []
        for path in self.config_paths:
            argv += ["--config", path]
        argv += [
            "--grpc-listen",
            self.grpc_listen,
            "--http-listen",
            self.http_listen,
            "--admin-listen",
            self.admin_listen,
            "--workers",
            str(self.workers),
            "--log-level",
            self.log_level,
            "--log-format",
            self.log_format,
            "--shutdown-timeout",
            repr(self.shutdown_timeout),
            "--max-message-size",
            str(self.max_message_size),
            "--max-concurrent-requests",
            str(self.max_concurrent_requests),
            "--reload-interval",
            repr(self.reload_interval),
            "--check-timeout",
            repr(self.check_timeout),
            "--check-cache-bytes",
            str(self.check_cache_bytes),
            "--max-attributes",
            str(self.max_attributes),
            "--max-string-length",
            str(self.max_string_length),
            "--max-map-entries",
            str(self.max_map_entries),
            "--max-report-records",
            str(self.max_report_records),
            "--delivery-ack",
            self.delivery_ack,
            "--http-max-connections",
            str(self.http_max_connections),
            "--http-header-timeout",
            repr(self.http_header_timeout),
            "--http-body-timeout",
            repr(self.http_body_timeout),
        ]
        if self.syslog_listen is not None:
            argv += ["--syslog-listen", self.syslog_listen]
        argv += ["--drain-delay", repr(self.drain_delay)]
        if self.data_dir is not None:
            argv += ["--data-dir", str(self.data_dir)]
        if self.ready_file is not None:
            argv += ["--ready-file", str(self.ready_file)]
        if self.admin_token_file is not None:
            argv += ["--admin-token-file", str(self.admin_token_file)]
        if self.tls_cert is not None and self.tls_key is not None:
            argv += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
            argv += ["--tls-client-auth", self.tls_client_auth]
        if self.tls_client_ca is not None:
            argv += ["--tls-client-ca", str(self.tls_client_ca)]
        if self.tls_allowed_identities:
            argv += ["--tls-allowed-identities", ",".join(self.tls_allowed_identities)]
        if self.worker_index is not None:
            argv += ["--worker-index", str(self.worker_index), "--worker-restarts", str(self.worker_restarts)]
        if self.parent_pid is not None:
            argv += ["--parent-pid", str(self.parent_pid)]
        return argv
