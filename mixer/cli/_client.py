"""`mixer check` and `mixer report`: a client in the manner of Istio's mixc."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mixer.cli._attrflags import AttributeFlagError, add_attribute_flags, attributes_from_args
from mixer.client import DEFAULT_TARGET, DEFAULT_TIMEOUT, ClientTls, MixerCallError, MixerClient
from mixer.decision import QuotaRequest
from mixer.proto.istio.mixer.v1.check_pb2 import CheckRequest
from mixer.status import Code
from mixer.wire import ReportEncoding, encode_check_request, encode_report_request

#: Exit statuses beyond 0 (answered) and 1 (a flag's value is wrong).
EXIT_CALL_FAILED: Final = 2
EXIT_DENIED: Final = 3

_ENCODINGS: Final = {
    "independent": ReportEncoding.INDEPENDENT_ENCODING,
    "delta": ReportEncoding.DELTA_ENCODING,
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive count")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _quota(text: str) -> tuple[str, QuotaRequest]:
    name, sep, rest = text.partition("=")
    amount_text, comma, flag = rest.partition(",")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=AMOUNT[,best_effort]")
    if comma and flag != "best_effort":
        raise argparse.ArgumentTypeError(f"{text!r}: only ',best_effort' may follow the amount")
    try:
        amount = int(amount_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: amount {amount_text!r} is not an integer") from None
    if amount < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: amount must not be negative")
    return name, QuotaRequest(amount, best_effort=bool(comma))


def _add_call_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("call")
    group.add_argument(
        "--server",
        default=DEFAULT_TARGET,
        metavar="HOST:PORT",
        help=f"mixer address (default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--repeat", type=_positive_int, default=1, metavar="N", help="send N times; N > 1 adds a summary"
    )
    group.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="C",
        help="calls in flight at once (with --repeat)",
    )
    group.add_argument("--quiet", action="store_true", help="print only the summary (with --repeat)")
    tls = parser.add_argument_group("TLS (any of these turns it on)")
    tls.add_argument(
        "--tls-ca", type=Path, default=None, metavar="PEM", help="CA to trust (default: the system's)"
    )
    tls.add_argument("--tls-cert", type=Path, default=None, metavar="PEM", help="client certificate (mTLS)")
    tls.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="the client certificate's key")
    tls.add_argument(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="name the server's certificate must carry, when not the --server host",
    )
    tls.add_argument("--tls", action="store_true", help="TLS with the system's CAs and no other --tls-* flag")


class _TlsFlagError(Exception):
    pass


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise _TlsFlagError("--tls-cert and --tls-key go together")
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_server_name):
        return None
    try:
        return ClientTls(
            ca=args.tls_ca.read_bytes() if args.tls_ca is not None else None,
            cert=args.tls_cert.read_bytes() if args.tls_cert is not None else None,
            key=args.tls_key.read_bytes() if args.tls_key is not None else None,
            server_name=args.tls_server_name,
        )
    except OSError as exc:
        raise _TlsFlagError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``mixer`` parser's subparsers."""
    p = sub.add_parser(
        "check",
        help="send a Check to a mixer and print the answer as JSON",
        description="Send a Check with the attributes given as flags; print each answer as one JSON line.",
        epilog=f"""\
exit status:
  0  every call was answered, whether the answer allows the request or not
  1  an attribute flag's value is wrong (nothing was sent)
  {EXIT_CALL_FAILED}  a call failed (the reason is on stderr), or a usage error
  {EXIT_DENIED}  with --fail-on-deny: every call was answered and at least one answer was not OK
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_attribute_flags(p)
    group = p.add_argument_group("check")
    group.add_argument(
        "--quota",
        dest="quotas",
        action="append",
        default=[],
        type=_quota,
        metavar="NAME=AMOUNT[,best_effort]",
        help="ask for a quota (repeatable)",
    )
    group.add_argument(
        "--dedup",
        default="",
        metavar="ID",
        help="deduplication id (the same on every repeat; default: a fresh id for each call)",
    )
    group.add_argument(
        "--fail-on-deny", action="store_true", help=f"exit {EXIT_DENIED} when any answer is not OK"
    )
    _add_call_flags(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "report",
        help="send a Report of one attribute bag to a mixer",
        description="Send one ReportRequest holding the attributes given as flags (--count identical bags).",
        epilog=f"""\
exit status:
  0  every request was accepted
  1  an attribute flag's value is wrong (nothing was sent)
  {EXIT_CALL_FAILED}  a call failed (the reason is on stderr), or a usage error
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_attribute_flags(p)
    group = p.add_argument_group("report")
    group.add_argument(
        "--count",
        type=_positive_int,
        default=1,
        metavar="K",
        help="identical bags in the request (default 1)",
    )
    group.add_argument(
        "--encoding",
        choices=sorted(_ENCODINGS),
        default="independent",
        help="repeated attributes semantics (default independent, as Istio 1.1+ proxies)",
    )
    _add_call_flags(p)
    p.set_defaults(func=_cmd_report)


# --- commands -------------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    if not _tls_from_args(args):
        return EXIT_CALL_FAILED
    quotas: dict[str, QuotaRequest] = {}
    for name, quota in args.quotas:
        if name in quotas:
            print(f"error: --quota {name} given twice", file=sys.stderr)
            return 1
        quotas[name] = quota
    try:
        request = encode_check_request(attributes_from_args(args), deduplication_id=args.dedup, quotas=quotas)
    except (AttributeFlagError, TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    async def call(client: MixerClient) -> tuple[str, dict[str, Any]]:
        if args.dedup:
            answer = await client.send_check(request)
        else:
            # Each call is a new request, as a proxy sends it: with one shared (or empty) id the
            # server would take every call after the first for a retry and grant it again.
            fresh = CheckRequest()
            fresh.CopyFrom(request)
            fresh.deduplication_id = uuid.uuid4().hex
            answer = await client.send_check(fresh)
        return answer.code.name, answer.to_json()

    results = asyncio.run(_drive(args, "Check", call))
    if any(r.error is not None for r in results):
        return EXIT_CALL_FAILED
    if args.fail_on_deny and any(r.status != Code.OK.name for r in results):
        return EXIT_DENIED
    return 0


def _tls_from_args(args: argparse.Namespace) -> bool:
    try:
        args.client_tls = _client_tls(args)
    except _TlsFlagError as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    return True


def _cmd_report(args: argparse.Namespace) -> int:
    if not _tls_from_args(args):
        return EXIT_CALL_FAILED
    try:
        bag = attributes_from_args(args)
        request = encode_report_request([bag] * args.count, _ENCODINGS[args.encoding])
    except (AttributeFlagError, TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    async def call(client: MixerClient) -> tuple[str, dict[str, Any]]:
        await client.send_report(request)
        return Code.OK.name, {"status": Code.OK.name}

    results = asyncio.run(_drive(args, "Report", call))
    return EXIT_CALL_FAILED if any(r.error is not None for r in results) else 0


# --- sending and summarising ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Result:
    seconds: float
    #: The answer's status name; None when the call failed.
    status: str | None
    error: MixerCallError | None = None


def _failure_text(server: str, method: str, err: MixerCallError) -> str:
    if err.unreachable:
        return f"cannot reach mixer at {server}: {err.details}"
    return f"mixer at {server}: {method} failed: {err.code.name}: {err.details}"


async def _drive(
    args: argparse.Namespace,
    method: str,
    call: Callable[[MixerClient], Awaitable[tuple[str, dict[str, Any]]]],
) -> list[_Result]:
    """Send ``args.repeat`` calls, ``args.concurrency`` at a time, printing each answer as it comes."""
    results: list[_Result] = []
    remaining = iter(range(args.repeat))

    async def worker(client: MixerClient) -> None:
        # One shared iterator: workers take the next call until none is left.
        for _ in remaining:
            start = time.perf_counter()
            try:
                status, body = await call(client)
            except MixerCallError as err:
                results.append(_Result(time.perf_counter() - start, None, err))
                print(_failure_text(args.server, method, err), file=sys.stderr)
                continue
            results.append(_Result(time.perf_counter() - start, status))
            if not args.quiet:
                print(json.dumps(body))

    started = time.perf_counter()
    async with MixerClient(args.server, timeout=args.timeout, tls=args.client_tls) as client:
        await asyncio.gather(*(worker(client) for _ in range(min(args.concurrency, args.repeat))))
    if args.repeat > 1:
        print(json.dumps(_summary(results, time.perf_counter() - started, args.concurrency)))
    return results


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least ``percent`` of the values at or below it."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _summary(results: Sequence[_Result], elapsed: float, concurrency: int) -> dict[str, Any]:
    latencies = sorted(r.seconds for r in results)
    by_status = Counter(r.status for r in results if r.status is not None)
    errors = Counter(r.error.code.name for r in results if r.error is not None)
    return {
        "summary": {
            "requests": len(results),
            "concurrency": concurrency,
            "by_status": dict(sorted(by_status.items())),
            "call_errors": dict(sorted(errors.items())),
            "latency_ms": {
                "min": _ms(latencies[0]),
                "p50": _ms(_percentile(latencies, 50)),
                "p99": _ms(_percentile(latencies, 99)),
                "max": _ms(latencies[-1]),
                "mean": _ms(sum(latencies) / len(latencies)),
            },
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(len(results) / elapsed, 1) if elapsed > 0 else None,
        }
    }
