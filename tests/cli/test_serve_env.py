"""Every `mixer serve` flag can be set by its MIXER_* variable; a flag on the command line wins."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import pytest

from mixer.cli import build_parser, parse_args, subcommand
from mixer.cli._env import env_flags, env_name
from mixer.cli._serve import options_from_args

SERVE = subcommand(build_parser(), "serve")
FLAGS = list(env_flags(SERVE))

#: Texts tried, in order, as values of a flag whose type accepts them; two that convert are used.
_CANDIDATES = (
    "7",
    "9",
    "3.5",
    "5s",
    "10s",
    "2m",
    "127.0.0.1:1234",
    "[::1]:4321",
    "64KiB",
    "4MiB",
    "/tmp/mixer-env-a",
    "/tmp/mixer-env-b",
)


def _convert(action: argparse.Action, text: str) -> Any:
    convert = action.type if callable(action.type) else str
    return convert(text)


def _samples(action: argparse.Action) -> list[str]:
    """Two texts valid for ``action`` whose values differ from each other and from its default."""
    if action.choices is not None:
        texts = [str(c) for c in action.choices if c != action.default]
        return texts[:2] if len(texts) >= 2 else texts * 2
    found: list[str] = []
    values: list[Any] = [action.default]
    for text in _CANDIDATES:
        try:
            value = _convert(action, text)
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            continue
        if value not in values and not (isinstance(action.default, list) and value in action.default):
            found.append(text)
            values.append(value)
        if len(found) == 2:
            return found
    raise AssertionError(f"no sample value for {action.option_strings}: add one to _CANDIDATES")


def _is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0


def test_every_documented_serve_flag_has_a_variable() -> None:
    documented = {
        option
        for action in SERVE._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
        if option.startswith("--")
    }
    assert documented, "serve has no flags?"
    assert {env for _, env in FLAGS} == {env_name(flag) for flag in documented}
    assert env_name("--grpc-listen") == "MIXER_GRPC_LISTEN"


@pytest.mark.parametrize(("action", "env"), FLAGS, ids=[env for _, env in FLAGS])
def test_the_variable_sets_the_flag_and_the_flag_wins(action: argparse.Action, env: str) -> None:
    flag = next(o for o in action.option_strings if o.startswith("--"))
    if _is_switch(action):
        args = parse_args(["serve"], {env: "true"})
        assert getattr(args, action.dest) is not action.default
        assert getattr(parse_args(["serve"], {env: "false"}), action.dest) == action.default
        return
    from_env, from_flag = _samples(action)
    expected_env = _convert(action, from_env)
    expected_flag = _convert(action, from_flag)
    if isinstance(action, argparse._AppendAction):
        expected_env, expected_flag = [expected_env], [expected_flag]
    args = parse_args(["serve"], {env: from_env})
    assert getattr(args, action.dest) == expected_env
    args = parse_args(["serve", flag, from_flag], {env: from_env})
    assert getattr(args, action.dest) == expected_flag, "the command line must win over the environment"
    # Unset: the flag's own default.
    assert getattr(parse_args(["serve"], {}), action.dest) == action.default


def test_a_repeatable_flag_takes_several_values_from_its_variable() -> None:
    args = parse_args(["serve"], {"MIXER_CONFIG": "/etc/mixer/a.yaml:/etc/mixer/rules"})
    assert args.config_paths == ["/etc/mixer/a.yaml", "/etc/mixer/rules"]
    args = parse_args(["serve", "--config", "b.yaml"], {"MIXER_CONFIG": "/etc/mixer/a.yaml"})
    assert args.config_paths == ["b.yaml"]


def test_variables_reach_the_serve_options() -> None:
    args = parse_args(
        ["serve"],
        {
            "MIXER_GRPC_LISTEN": "127.0.0.1:19091",
            "MIXER_DRAIN_DELAY": "5",
            "MIXER_LOG_FORMAT": "json",
            "MIXER_LOG_LEVEL": "debug",
            "MIXER_MAX_MESSAGE_SIZE": "1MiB",
        },
    )
    options = options_from_args(args)
    assert (options.grpc_listen, options.drain_delay, options.log_format, options.log_level) == (
        "127.0.0.1:19091",
        5.0,
        "json",
        "DEBUG",
    )
    assert options.max_message_size == 1024 * 1024


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("MIXER_WORKERS", "many", "MIXER_WORKERS='many'"),
        ("MIXER_GRPC_LISTEN", "nowhere", "MIXER_GRPC_LISTEN='nowhere'"),
        ("MIXER_LOG_FORMAT", "xml", "want one of text, json"),
        ("MIXER_MAX_MESSAGE_SIZE", "huge", "is not a size"),
    ],
)
def test_a_bad_variable_is_a_usage_error_naming_it(
    env: str, value: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["serve"], {env: value})
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_help_names_each_variable_and_the_rule() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mixer", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    for _, env in FLAGS:
        assert f"[env {env}]" in proc.stdout, env
    assert "A flag on the command line wins" in proc.stdout
    assert "exit status:" in proc.stdout
