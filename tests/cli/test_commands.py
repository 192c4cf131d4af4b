"""`mixer --version`, `completion`, `config --default`, `validate` as strict as `serve`, `eval` typing
its attributes as `check` and `report` do, and every command's exit statuses in its --help."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mixer import __version__
from mixer.cli import build_parser, main, subcommand
from mixer.cli._completion import command_tree, completion_script
from mixer.config import load_config_text
from mixer.defaults import embedded_config_text
from plugins.manager import create_plugin_manager
from tests.server.support import free_port


def _run(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixer", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_version_flag_and_command_agree() -> None:
    flag = _run("--version")
    assert flag.returncode == 0
    version, decoder, check, encoder, line = _run("version").stdout.splitlines()
    assert flag.stdout.strip() == f"mixer {__version__}" == version
    # The command also names the istio.mixer.v1 decoder and the span encoder in use: the compiled
    # ones, which the install builds, unless the environment asks for pure Python.
    assert decoder == "wire decoder: compiled (mixer.wire._cdecode)"
    assert check == "CheckResponse writer: compiled (mixer.wire._cencode)"
    assert encoder == "span encoder: compiled (mixer.spans._cspan)"
    assert line == "access-log line encoder: compiled (mixer._cline)"
    pure = _run("version", env={"MIXER_PURE_PYTHON": "1"}).stdout.splitlines()
    assert pure == [
        version,
        "wire decoder: pure Python (MIXER_PURE_PYTHON is set)",
        "CheckResponse writer: pure Python (MIXER_PURE_PYTHON is set)",
        "span encoder: pure Python (MIXER_PURE_PYTHON is set)",
        "access-log line encoder: pure Python (MIXER_PURE_PYTHON is set)",
    ]


def test_every_command_lists_its_exit_statuses_in_help() -> None:
    _, commands = command_tree(build_parser())
    assert {c.name for c in commands} >= {"serve", "check", "report", "eval", "validate", "completion"}
    for command in commands:
        text = _run(command.name, "--help").stdout
        assert "exit status:" in text, f"mixer {command.name} --help has no exit statuses"
        assert "  0  " in text, command.name


# -- completion -------------------------------------------------------------------------------------


def _bash_complete(script: Path, *words: str) -> list[str]:
    words_text = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}; COMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; "
        '_mixer; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.split()


def test_bash_completion_completes_commands_flags_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "mixer.bash"
    printed = _run("completion", "bash")
    assert printed.returncode == 0
    script.write_text(printed.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert _bash_complete(script, "mixer", "se") == ["serve"]
    assert set(_bash_complete(script, "mixer", "")) >= {"serve", "check", "report", "completion"}
    assert "--drain-delay" in _bash_complete(script, "mixer", "serve", "--d")
    assert _bash_complete(script, "mixer", "serve", "--log-format", "") == ["text", "json"]
    assert "--fail-on-deny" in _bash_complete(script, "mixer", "check", "--f")
    # A flag added to the parser is in the next script without other changes.
    parser = build_parser()
    subcommand(parser, "serve").add_argument("--brand-new-flag", choices=["x", "y"])
    script.write_text(completion_script(parser, "bash"))
    assert _bash_complete(script, "mixer", "serve", "--brand") == ["--brand-new-flag"]
    assert _bash_complete(script, "mixer", "serve", "--brand-new-flag", "") == ["x", "y"]


def test_zsh_completion_wraps_the_bash_one() -> None:
    text = _run("completion", "zsh").stdout
    assert text.startswith("#compdef mixer")
    assert "bashcompinit" in text
    assert "complete -F _mixer mixer" in text
    zsh = shutil.which("zsh")
    if zsh is not None:
        subprocess.run([zsh, "-n", "-c", text], check=True, timeout=30)


def test_fish_completion_names_every_command_and_flag() -> None:
    text = _run("completion", "fish").stdout
    _, commands = command_tree(build_parser())
    for command in commands:
        assert f"-a {command.name} " in text
        for flag in command.flags:
            long = next((n for n in flag.names if n.startswith("--")), None)
            if long is not None:
                assert f"__fish_seen_subcommand_from {command.name}' " in text
                assert f"-l {long[2:]}" in text
    assert "-x -a 'text json'" in text
    fish = shutil.which("fish")
    if fish is not None:
        subprocess.run([fish, "--no-execute", "-c", text], check=True, timeout=30)


def test_an_unknown_shell_is_a_usage_error() -> None:
    assert _run("completion", "powershell").returncode == 2


# -- config --default ---------------------------------------------------------------------------------


def test_config_default_prints_the_embedded_default() -> None:
    printed = _run("config", "--default")
    assert printed.returncode == 0
    assert printed.stdout == embedded_config_text()
    registry = create_plugin_manager(load_entry_points=False, blocked=()).registry()
    config = load_config_text(printed.stdout, registry, source_name="printed")
    assert "prometheus.istio-system" in config.handlers


# -- validate is as strict as serve -------------------------------------------------------------------


def _unknown_plan_config(tmp_path: Path) -> Path:
    text = embedded_config_text()
    assert "demo-free-key: {subject: alice, plan: free}" in text
    path = tmp_path / "gold.yaml"
    path.write_text(text.replace("{subject: alice, plan: free}", "{subject: alice, plan: gold}"))
    return path


def test_validate_refuses_what_serve_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _unknown_plan_config(tmp_path)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "unknown plan(s)" in err
    assert "'gold'" in err
    assert err.rstrip().endswith("1 error(s)")

    served = _run(
        "serve",
        "--config",
        str(path),
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        env={"MIXER_PROMETHEUS_LISTEN": "127.0.0.1:0"},
    )
    assert served.returncode == 1
    assert "unknown plan(s)" in served.stderr


def test_validate_still_passes_a_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "default.yaml"
    path.write_text(embedded_config_text())
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_validate_binds_nothing(tmp_path: Path) -> None:
    # The embedded default's Prometheus handler listens when started; validate only builds it.
    port = free_port()
    path = tmp_path / "default.yaml"
    path.write_text(embedded_config_text())
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = _run("validate", str(path), env={"MIXER_PROMETHEUS_LISTEN": f"127.0.0.1:{port}"})
    assert done.returncode == 0, done.stderr


# -- eval types attributes as check and report do -----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-i", "request.path=5"], "'request.path' is declared STRING"),
        (["-s", "response.code=200"], "'response.code' is declared INT64"),
        (["-s", "source.ip=not-an-ip"], "not an IP address"),
        (["-i", "request.size=big"], "invalid int64 'big'"),
    ],
)
def test_eval_refuses_what_check_and_report_refuse(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "true", *argv]) == 1
    assert fragment in capsys.readouterr().err
    for command in ("check", "report"):
        # Refused before any call: no server is needed.
        assert main([command, "--server", "127.0.0.1:1", *argv]) == 1
        assert fragment in capsys.readouterr().err


def test_eval_sends_a_string_ip_as_an_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", 'source.ip == ip("10.0.0.1")', "-s", "source.ip=10.0.0.1"]) == 0
    assert capsys.readouterr().out.strip() == "true"
