"""The ``mixer`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence

from mixer import __version__
from mixer.attributes import to_jsonable
from mixer.cli import _client, _completion, _serve
from mixer.cli._attrflags import AttributeFlagError, add_attribute_flags, attributes_from_args
from mixer.cli._env import apply_environment

__all__ = ["build_parser", "main", "parse_args", "subcommand"]

_EVAL_EPILOG = """\
exit status:
  0  the result was printed (as JSON)
  1  the expression does not compile or fails to evaluate, or an attribute flag's value is wrong
  2  usage error
"""
_VALIDATE_EPILOG = """\
Runs every check `mixer serve` runs before it binds its ports: the files load, every handler,
instance and rule builds (adapter params, plans, expressions, rule references). Handlers are
built, not started: nothing listens or connects.

exit status:
  0  valid: prints a count of what the config holds
  1  invalid: prints each error on stderr, then the number of errors
  2  usage error
"""
_CONFIG_EPILOG = """\
exit status:
  0  printed
  2  usage error
"""
_ADAPTERS_EPILOG = """\
exit status:
  0  listed
  2  usage error
"""
_SCHEMA_EPILOG = """\
exit status:
  0  printed
  2  usage error, or no installed adapter or template of that name
"""
_VERSION_EPILOG = """\
exit status:
  0  printed
"""


def _cmd_version(args: argparse.Namespace) -> int:
    from mixer.encoding import describe_line_encoder
    from mixer.spans.otlp import describe_encoder
    from mixer.wire import describe_check_encoder, describe_decoder

    print(f"mixer {__version__}")
    print(f"wire decoder: {describe_decoder()}")
    print(f"CheckResponse writer: {describe_check_encoder()}")
    print(f"span encoder: {describe_encoder()}")
    print(f"access-log line encoder: {describe_line_encoder()}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from mixer import expr

    try:
        attributes = attributes_from_args(args)
        result = expr.evaluate(args.expression, attributes)
    except (AttributeFlagError, expr.ExpressionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(to_jsonable(result)))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mixer.config import ConfigError
    from mixer.runtime import RuntimeBuildError, build_runtime
    from mixer.server import ConfigSource
    from plugins.manager import create_plugin_manager

    registry = create_plugin_manager().registry()
    try:
        # The same loading as `mixer serve`, then the runtime build it does before starting.
        config, _ = ConfigSource(tuple(args.paths)).load(registry)
    except ConfigError as err:
        for issue in err.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"{len(err.issues)} error(s)", file=sys.stderr)
        return 1
    try:
        build_runtime(config, registry)
    except RuntimeBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        print("1 error(s)", file=sys.stderr)
        return 1
    print(
        f"ok: {len(config.handlers)} handlers, {len(config.instances)} instances, "
        f"{len(config.rules)} rules, {len(config.manifest)} attributes"
    )
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from mixer.defaults import embedded_config_text

    sys.stdout.write(embedded_config_text())
    return 0


def _cmd_adapters(args: argparse.Namespace) -> int:
    from plugins.manager import create_plugin_manager, list_adapters

    listings = list_adapters(create_plugin_manager())
    if args.json:
        print(json.dumps([to_jsonable(listing) for listing in listings], indent=2))
        return 0
    rows = [("NAME", "VERSION", "STABILITY", "TEMPLATES", "ORIGIN")]
    for item in listings:
        if not args.all and item.origin == "builtin" and item.stability.value == "development":
            continue
        rows.append(
            (item.name, item.version, item.stability.value, ",".join(sorted(item.templates)), item.origin)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from mixer.schema import adapter_schema, registry_schema, template_schema
    from plugins.manager import create_plugin_manager

    registry = create_plugin_manager().registry()
    if args.adapter is not None:
        info = registry.adapter(args.adapter)
        if info is None:
            print(
                f"error: no adapter {args.adapter!r}; installed: {', '.join(sorted(registry.adapters))}",
                file=sys.stderr,
            )
            return 2
        document = adapter_schema(info)
    elif args.template is not None:
        spec = registry.template(args.template)
        if spec is None:
            print(
                f"error: no template {args.template!r}; registered: {', '.join(sorted(registry.templates))}",
                file=sys.stderr,
            )
            return 2
        document = template_schema(spec)
    else:
        document = registry_schema(registry)
    print(json.dumps(document, indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixer",
        description="Mesh Mixer: policy and telemetry hub",
        epilog="Each command's --help lists its exit statuses. `mixer completion bash` prints a "
        "completion script.",
    )
    parser.add_argument("--version", action="version", version=f"mixer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("version", help="print the version", epilog=_VERSION_EPILOG, formatter_class=raw)
    p.set_defaults(func=_cmd_version)

    p = sub.add_parser(
        "eval",
        help="evaluate an expression against attributes given as flags",
        epilog=_EVAL_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("expression")
    add_attribute_flags(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "validate",
        help="validate config files or directories as `mixer serve` would; exit 1 listing every error",
        epilog=_VALIDATE_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "config",
        help="print the embedded default config (what `mixer serve` runs with no --config)",
        epilog=_CONFIG_EPILOG,
        formatter_class=raw,
    )
    p.add_argument(
        "--default",
        action="store_true",
        required=True,
        help="the embedded default's YAML (mixer/defaults/embedded.yaml in the package)",
    )
    p.set_defaults(func=_cmd_config)

    _serve.register(sub)
    _client.register(sub)

    p = sub.add_parser(
        "adapters", help="list installed adapters", epilog=_ADAPTERS_EPILOG, formatter_class=raw
    )
    p.add_argument("--all", action="store_true", help="include development-stage adapters")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_adapters)

    _completion.register(sub, parser)
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of every adapter's handler params and template's instance params",
        epilog=_SCHEMA_EPILOG,
        formatter_class=raw,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--adapter", metavar="NAME", help="only this adapter's handler params")
    which.add_argument("--template", metavar="NAME", help="only this template's instance params")
    p.set_defaults(func=_cmd_schema)
    return parser


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """``argv`` parsed as ``main`` does, ``mixer serve``'s flags defaulting to their ``MIXER_*``
    variables in ``environ`` (the process environment when None).

    :raises SystemExit: a usage error (printed), or ``--help`` / ``--version``.
    """
    parser = build_parser()
    # After every flag is defined: a serve flag added anywhere gets its MIXER_* variable.
    fill_environment = apply_environment(subcommand(parser, "serve"), environ)
    args = parser.parse_args(argv)
    if args.command == "serve":
        fill_environment(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (`mixer check ... | head`): stop quietly, as Unix tools do, and keep
        # the interpreter from complaining again while it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
