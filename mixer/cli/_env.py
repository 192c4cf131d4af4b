"""Flags settable by environment variables: ``--grpc-listen`` is also ``MIXER_GRPC_LISTEN``.

Applied to a parser after all its flags are defined, so a flag added later gets its variable
without more code. A variable replaces the flag's default, so a flag on the command line wins.
Values are converted and checked as the flag's own would be; a bad value is a usage error that
names the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

ENV_PREFIX: Final = "MIXER_"
#: A repeatable flag's variable holds several values separated by this (as PATH does).
LIST_SEPARATOR: Final = os.pathsep
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def env_name(flag: str) -> str:
    """``--grpc-listen`` -> ``MIXER_GRPC_LISTEN``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def env_flags(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.Action, str]]:
    """Every documented long flag of ``parser`` with its variable (hidden flags and ``--help`` have none)."""
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        longs = [option for option in action.option_strings if option.startswith("--")]
        if longs:
            yield action, env_name(longs[0])


def _is_list(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def _is_switch(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, name: str, text: str) -> Any:
    if _is_switch(action):
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            parser.error(f"{name}={text!r}: want true or false (1/0, yes/no)")
        on = lowered in _TRUE
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    convert = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        parser.error(f"{name}={text!r}: {exc}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        parser.error(f"{name}={text!r}: want one of {choices}")
    return value


def apply_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> Callable[[argparse.Namespace], None]:
    """Make each flag's ``MIXER_*`` variable, when set, its default, and say so in ``--help``.

    A repeatable flag's values from the environment must not be added to those of the command
    line, so they are filled in after parsing: call the returned function on the parsed namespace.

    :raises SystemExit: (via ``parser.error``) a variable's value is not valid for its flag.
    """
    env = os.environ if environ is None else environ
    lists: list[tuple[str, list[Any]]] = []
    for action, name in env_flags(parser):
        if action.help is not None and name not in action.help:
            action.help = f"{action.help} [env {name}]"
        text = env.get(name)
        if text is None:
            continue
        if _is_list(action):
            values = [_convert(parser, action, name, item) for item in text.split(LIST_SEPARATOR) if item]
            lists.append((action.dest, values))
        else:
            action.default = _convert(parser, action, name, text)

    def finish(namespace: argparse.Namespace) -> None:
        for dest, values in lists:
            if not getattr(namespace, dest, None):
                setattr(namespace, dest, list(values))

    return finish
