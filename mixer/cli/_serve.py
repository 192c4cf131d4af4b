"""`mixer serve`: run the server (see docs/serving.md)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from mixer import server
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
        server.ListenAddress.parse(text)
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


#: ``mixer serve``'s valued options, in help order: flag, parser, default and metavar.
_VALUED_OPTIONS: Final[tuple[tuple[str, Callable[[str], Any], object, str], ...]] = (
    ("--grpc-listen", _listen, server.DEFAULT_GRPC_LISTEN, "HOST:PORT"),
    ("--http-listen", _listen, server.DEFAULT_HTTP_LISTEN, "HOST:PORT"),
    ("--admin-listen", _listen, server.DEFAULT_ADMIN_LISTEN, "HOST:PORT"),
    ("--admin-token-file", Path, None, "PATH"),
    ("--syslog-listen", _listen, None, "HOST:PORT"),
    ("--workers", int, 1, "N"),
    ("--data-dir", Path, None, "DIR"),
    ("--ready-file", Path, None, "PATH"),
    ("--shutdown-timeout", float, server.DEFAULT_SHUTDOWN_TIMEOUT, "SECONDS"),
    ("--max-message-size", _size, server.DEFAULT_MAX_MESSAGE_SIZE, "BYTES"),
    ("--max-concurrent-requests", int, server.DEFAULT_MAX_CONCURRENT_REQUESTS, "N"),
    ("--reload-interval", float, server.DEFAULT_RELOAD_INTERVAL, "SECONDS"),
    ("--check-timeout", float, server.DEFAULT_CHECK_TIMEOUT, "SECONDS"),
    ("--check-cache-bytes", _size, server.DEFAULT_CHECK_CACHE_BYTES, "BYTES"),
    ("--max-attributes", int, DEFAULT_MAX_ATTRIBUTES, "N"),
    ("--max-string-length", int, DEFAULT_MAX_STRING_LENGTH, "N"),
    ("--max-map-entries", int, DEFAULT_MAX_MAP_ENTRIES, "N"),
    ("--max-report-records", int, DEFAULT_MAX_REPORT_RECORDS, "N"),
    ("--http-max-connections", int, server.DEFAULT_HTTP_MAX_CONNECTIONS, "N"),
    ("--http-header-timeout", float, server.DEFAULT_HTTP_HEADER_TIMEOUT, "S"),
    ("--http-body-timeout", float, server.DEFAULT_HTTP_BODY_TIMEOUT, "S"),
    ("--drain-delay", float, server.DEFAULT_DRAIN_DELAY, "SECONDS"),
)
#: Their help, in which ``%(default)s`` (``%(default)g`` for seconds) stands for the default.
_VALUED_HELP: Final[dict[str, str]] = {
    "--grpc-listen": "gRPC API address; port 0 picks a free one (default %(default)s)",
    "--http-listen": (
        "address of the HTTP protocols (/v1/auth, /v1/check, /v1/report) and /healthz /readyz "
        "(default %(default)s)"
    ),
    "--admin-listen": "/metrics /config /healthz /readyz address (default %(default)s)",
    "--admin-token-file": "bearer token the admin port asks for, but on /healthz and /readyz (default: none)",
    "--syslog-listen": "UDP address for nginx access logs over syslog, reported as telemetry (default: off)",
    "--workers": "server processes sharing the ports with SO_REUSEPORT (default 1)",
    "--data-dir": "where handlers keep files (spools); workers use DIR/worker-I",
    "--ready-file": "write the bound addresses as JSON here once serving; removed on stop",
    "--shutdown-timeout": "time to finish calls and drain handlers on SIGTERM (default %(default)g)",
    "--max-message-size": (
        "largest gRPC message accepted, e.g. 4MiB (default 4MiB); larger: RESOURCE_EXHAUSTED"
    ),
    "--max-concurrent-requests": "calls in flight before new ones get UNAVAILABLE (default %(default)s)",
    "--reload-interval": (
        "how often config files are checked for changes; 0: only on SIGHUP (default %(default)g)"
    ),
    "--check-timeout": (
        "longest a Check may take when the caller's deadline is later or unset (default %(default)g)"
    ),
    "--check-cache-bytes": (
        "memory for cached precondition answers (never quotas), e.g. 16MiB (default 16MiB); 0: off"
    ),
    "--max-attributes": "attributes per bag before INVALID_ARGUMENT (default %(default)s)",
    "--max-string-length": "characters per string before INVALID_ARGUMENT (default %(default)s)",
    "--max-map-entries": "entries per string map before INVALID_ARGUMENT (default %(default)s)",
    "--max-report-records": (
        "bags per Report, records per HTTP report or access-log message, before RESOURCE_EXHAUSTED "
        "/ HTTP 413 (default %(default)s)"
    ),
    "--http-max-connections": (
        "open connections on the HTTP port; past it a new one is answered 503 and closed (default "
        "%(default)s)"
    ),
    "--http-header-timeout": (
        "seconds a request's header may take to arrive; then 408 and the connection is closed "
        "(default %(default)g)"
    ),
    "--http-body-timeout": (
        "seconds a request's body may take to arrive after its header; then the connection is "
        "closed (default %(default)g)"
    ),
    "--drain-delay": (
        "on SIGTERM, time between /readyz 503 and gRPC health NOT_SERVING and refusing new calls, "
        "for load balancers to notice (default %(default)g; e.g. 5 behind one)"
    ),
}


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
    for flag, parser, default, metavar in _VALUED_OPTIONS:
        p.add_argument(flag, type=parser, default=default, metavar=metavar, help=_VALUED_HELP[flag])
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=server.LOG_LEVELS,
        help="server log level (default INFO)",
    )
    p.add_argument(
        "--log-format",
        default=None,
        choices=server.LOG_FORMATS,
        help="server logs on stderr as text or JSON lines (default: text on a terminal, else json)",
    )
    p.add_argument(
        "--delivery-ack",
        choices=server.DELIVERY_ACKS,
        default="auto",
        help=(
            "when a Report is answered, for report handlers whose delivery options set no ack: "
            "auto (after the spool commit while a backend is failing or has a backlog), spool "
            "(always after the spool commit), memory (once queued); see docs/delivery.md "
            "(default auto)"
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
        choices=server.TLS_CLIENT_AUTH_MODES,
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


def options_from_args(args: argparse.Namespace) -> server.ServeOptions:
    """The :class:`server.ServeOptions` that parsed ``mixer serve`` arguments ask for.

    :raises ValueError: a value out of range.
    """
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(server.ServeOptions)}
    values["config_paths"] = tuple(args.config_paths)
    values["log_format"] = args.log_format or server.default_log_format()
    values["tls_allowed_identities"] = tuple(args.tls_allowed_identities)
    return server.ServeOptions(**values)


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
