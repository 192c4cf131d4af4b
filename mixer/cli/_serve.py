"""`mixer serve`: run the server (see docs/serving.md)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Final

from mixer.server import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_CHECK_CACHE_BYTES,
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_DRAIN_DELAY,
    DEFAULT_GRPC_LISTEN,
    DEFAULT_HTTP_BODY_TIMEOUT,
    DEFAULT_HTTP_HEADER_TIMEOUT,
    DEFAULT_HTTP_LISTEN,
    DEFAULT_HTTP_MAX_CONNECTIONS,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_RELOAD_INTERVAL,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DELIVERY_ACKS,
    LOG_FORMATS,
    LOG_LEVELS,
    TLS_CLIENT_AUTH_MODES,
    ListenAddress,
    ServeOptions,
    default_log_format,
)
from mixer.wire import (
    DEFAULT_MAX_ATTRIBUTES,
    DEFAULT_MAX_MAP_ENTRIES,
    DEFAULT_MAX_REPORT_RECORDS,
    DEFAULT_MAX_STRING_LENGTH,
)

_SIZE = re.compile(r"(\d+)\s*(|k|ki|kib|kb|m|mi|mib|mb)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "ki": 1024, "kib": 1024, "kb": 1024}
_SIZE_UNITS |= {"m": 1024**2, "mi": 1024**2, "mib": 1024**2, "mb": 1024**2}


def _size(text: str) -> int:
    """Bytes: ``4194304``, ``64KiB``, ``4MiB`` (K and M are powers of 1024)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 4194304, 64KiB, 4MiB)")
    return int(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]


def _listen(text: str) -> str:
    try:
        ListenAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _identities(text: str) -> tuple[str, ...]:
    found = tuple(part.strip() for part in text.split(",") if part.strip())
    if not found:
        raise argparse.ArgumentTypeError("no identity given (e.g. spiffe://td/ns/x/sa/y,client.example)")
    return found


SERVE_EPILOG: Final = """\
environment:
  Every flag can also be set by an environment variable named after it: MIXER_ and the flag's
  name in capitals with - as _ (--grpc-listen: MIXER_GRPC_LISTEN, --workers: MIXER_WORKERS;
  --config takes several paths separated by ':'). A flag on the command line wins.
  Configs read their own variables with ${VAR:-default}: the embedded default and deploy/config
  take the Prometheus scrape address from MIXER_PROMETHEUS_LISTEN (127.0.0.1:42422).

exit status:
  0  stopped gracefully (SIGTERM, SIGINT)
  1  could not start (config error, address in use: the one-line reason is logged), or a second
     SIGTERM cut the shutdown short
  2  usage error (unknown flag, bad value in a flag or a MIXER_* variable)
  130  a second SIGINT (Ctrl-C) cut the shutdown short
"""


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``mixer`` parser's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the server (istio.mixer.v1 gRPC, HTTP health/metrics/config)",
        description=(
            "Run the Mesh Mixer server. With no --config it runs the embedded default: stock Istio "
            "metrics on a Prometheus endpoint, access logs on stdout, in-memory quota."
        ),
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="PATH",
        dest="config_paths",
        help="config file or directory (repeatable); none: the embedded default",
    )
    p.add_argument(
        "--grpc-listen",
        type=_listen,
        default=DEFAULT_GRPC_LISTEN,
        metavar="HOST:PORT",
        help=f"gRPC API address; port 0 picks a free one (default {DEFAULT_GRPC_LISTEN})",
    )
    p.add_argument(
        "--http-listen",
        type=_listen,
        default=DEFAULT_HTTP_LISTEN,
        metavar="HOST:PORT",
        help=(
            "address of the HTTP protocols (/v1/auth, /v1/check, /v1/report) and /healthz /readyz "
            f"(default {DEFAULT_HTTP_LISTEN})"
        ),
    )
    p.add_argument(
        "--admin-listen",
        type=_listen,
        default=DEFAULT_ADMIN_LISTEN,
        metavar="HOST:PORT",
        help=f"/metrics /config /healthz /readyz address (default {DEFAULT_ADMIN_LISTEN})",
    )
    p.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="bearer token the admin port asks for, but on /healthz and /readyz (default: none)",
    )
    p.add_argument(
        "--syslog-listen",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="UDP address for nginx access logs over syslog, reported as telemetry (default: off)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes sharing the ports with SO_REUSEPORT (default 1)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where handlers keep files (spools); workers use DIR/worker-I",
    )
    p.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the bound addresses as JSON here once serving; removed on stop",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="server log level (default INFO)",
    )
    p.add_argument(
        "--log-format",
        default=None,
        choices=LOG_FORMATS,
        help="server logs on stderr as text or JSON lines (default: text on a terminal, else json)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help=f"time to finish calls and drain handlers on SIGTERM (default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-message-size",
        type=_size,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest gRPC message accepted, e.g. 4MiB (default 4MiB); larger: RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_REQUESTS,
        metavar="N",
        help=f"calls in flight before new ones get UNAVAILABLE (default {DEFAULT_MAX_CONCURRENT_REQUESTS})",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=DEFAULT_RELOAD_INTERVAL,
        metavar="SECONDS",
        help=(
            "how often config files are checked for changes; 0: only on SIGHUP "
            f"(default {DEFAULT_RELOAD_INTERVAL:g})"
        ),
    )
    p.add_argument(
        "--check-timeout",
        type=float,
        default=DEFAULT_CHECK_TIMEOUT,
        metavar="SECONDS",
        help=(
            "longest a Check may take when the caller's deadline is later or unset "
            f"(default {DEFAULT_CHECK_TIMEOUT:g})"
        ),
    )
    p.add_argument(
        "--check-cache-bytes",
        type=_size,
        default=DEFAULT_CHECK_CACHE_BYTES,
        metavar="BYTES",
        help="memory for cached precondition answers (never quotas), e.g. 16MiB (default 16MiB); 0: off",
    )
    p.add_argument(
        "--max-attributes",
        type=int,
        default=DEFAULT_MAX_ATTRIBUTES,
        metavar="N",
        help=f"attributes per bag before INVALID_ARGUMENT (default {DEFAULT_MAX_ATTRIBUTES})",
    )
    p.add_argument(
        "--max-string-length",
        type=int,
        default=DEFAULT_MAX_STRING_LENGTH,
        metavar="N",
        help=f"characters per string before INVALID_ARGUMENT (default {DEFAULT_MAX_STRING_LENGTH})",
    )
    p.add_argument(
        "--max-map-entries",
        type=int,
        default=DEFAULT_MAX_MAP_ENTRIES,
        metavar="N",
        help=f"entries per string map before INVALID_ARGUMENT (default {DEFAULT_MAX_MAP_ENTRIES})",
    )
    p.add_argument(
        "--max-report-records",
        type=int,
        default=DEFAULT_MAX_REPORT_RECORDS,
        metavar="N",
        help=(
            "bags per Report, records per HTTP report or access-log message, before "
            f"RESOURCE_EXHAUSTED / HTTP 413 (default {DEFAULT_MAX_REPORT_RECORDS})"
        ),
    )
    p.add_argument(
        "--delivery-ack",
        choices=DELIVERY_ACKS,
        default="auto",
        help=(
            "when a Report is answered, for report handlers whose delivery options set no ack: "
            "auto (after the spool commit while a backend is failing or has a backlog), spool "
            "(always after the spool commit), memory (once queued); see docs/delivery.md "
            "(default auto)"
        ),
    )
    p.add_argument(
        "--http-max-connections",
        type=int,
        default=DEFAULT_HTTP_MAX_CONNECTIONS,
        metavar="N",
        help=(
            "open connections on the HTTP port; past it a new one is answered 503 and closed "
            f"(default {DEFAULT_HTTP_MAX_CONNECTIONS})"
        ),
    )
    p.add_argument(
        "--http-header-timeout",
        type=float,
        default=DEFAULT_HTTP_HEADER_TIMEOUT,
        metavar="S",
        help=(
            "seconds a request's header may take to arrive; then 408 and the connection is closed "
            f"(default {DEFAULT_HTTP_HEADER_TIMEOUT:g})"
        ),
    )
    p.add_argument(
        "--http-body-timeout",
        type=float,
        default=DEFAULT_HTTP_BODY_TIMEOUT,
        metavar="S",
        help=(
            "seconds a request's body may take to arrive after its header; then the connection is "
            f"closed (default {DEFAULT_HTTP_BODY_TIMEOUT:g})"
        ),
    )
    p.add_argument(
        "--drain-delay",
        type=float,
        default=DEFAULT_DRAIN_DELAY,
        metavar="SECONDS",
        help=(
            "on SIGTERM, time between /readyz 503 and gRPC health NOT_SERVING and refusing new calls, "
            f"for load balancers to notice (default {DEFAULT_DRAIN_DELAY:g}; e.g. 5 behind one)"
        ),
    )
    tls = p.add_argument_group("TLS (gRPC and HTTP listeners; see docs/serving.md)")
    tls.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="PEM",
        help="server certificate chain; with --tls-key both listeners speak TLS (reloaded when changed)",
    )
    tls.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="the server certificate's key")
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="CA certificates that client certificates must chain to (mTLS)",
    )
    tls.add_argument(
        "--tls-client-auth",
        choices=TLS_CLIENT_AUTH_MODES,
        default="none",
        help="client certificates: none, optional (verified when sent), require (default none)",
    )
    tls.add_argument(
        "--tls-allowed-identities",
        type=_identities,
        default=(),
        metavar="ID,ID",
        help=(
            "client certificate SAN DNS names or URIs (spiffe://td/ns/x/sa/y) allowed; others: "
            "PERMISSION_DENIED, HTTP 403 (default: any trusted)"
        ),
    )
    # Set by the --workers supervisor on the processes it starts.
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-restarts", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_serve)


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """The :class:`ServeOptions` that parsed ``mixer serve`` arguments ask for.

    :raises ValueError: a value out of range.
    """
    return ServeOptions(
        config_paths=tuple(args.config_paths),
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
        admin_listen=args.admin_listen,
        admin_token_file=args.admin_token_file,
        syslog_listen=args.syslog_listen,
        workers=args.workers,
        data_dir=args.data_dir,
        ready_file=args.ready_file,
        log_level=args.log_level,
        log_format=args.log_format or default_log_format(),
        shutdown_timeout=args.shutdown_timeout,
        max_message_size=args.max_message_size,
        max_concurrent_requests=args.max_concurrent_requests,
        reload_interval=args.reload_interval,
        check_timeout=args.check_timeout,
        check_cache_bytes=args.check_cache_bytes,
        max_attributes=args.max_attributes,
        max_string_length=args.max_string_length,
        max_map_entries=args.max_map_entries,
        max_report_records=args.max_report_records,
        delivery_ack=args.delivery_ack,
        http_max_connections=args.http_max_connections,
        http_header_timeout=args.http_header_timeout,
        http_body_timeout=args.http_body_timeout,
        drain_delay=args.drain_delay,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tls_client_auth=args.tls_client_auth,
        tls_allowed_identities=tuple(args.tls_allowed_identities),
        worker_index=args.worker_index,
        worker_restarts=args.worker_restarts,
        parent_pid=args.parent_pid,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from mixer.server import configure_logging, run_server, run_workers

    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(options.log_level, options.log_format, worker_index=options.worker_index)
    if options.workers > 1 and options.worker_index is None:
        return run_workers(options)
    return run_server(options)
