"""deploy/container/Dockerfile: its rules, checked by reading it, and the image's contents, checked by
doing here what its stages do (no Docker engine runs here).

The install test builds our wheel from a copy of exactly the sources the Dockerfile copies, installs
it with the hash-locked runtime set into a fresh venv, and runs the image's own ENTRYPOINT + CMD,
config and HEALTHCHECK command from that venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.deploy._dockerfile import Instruction, parse
from tests.deploy._traffic import http_bag
from tests.server.support import check, free_port, http_get, launcher, report, wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
CONFIG_DIR = "/etc/mixer/config"
DATA_DIR = "/var/lib/mixer"
#: What the image's EXPOSE must list: gRPC API, HTTP, HTTP admin, the prometheus adapter's endpoint.
PORTS = {"9091", "9093", "9094", "42422"}


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE)


def _final(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last and i.keyword == keyword]


def _env(instructions: list[Instruction]) -> dict[str, str]:
    """The final stage's ENV, ``$PATH``-style references left as written."""
    out: dict[str, str] = {}
    for instruction in _final(instructions, "ENV"):
        for word in instruction.operands():
            name, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: ENV {word!r} is not in the key=value form"
            out[name] = value
    return out


def _baked_config(instructions: list[Instruction]) -> Path:
    """The repository file the final stage copies into the config directory."""
    for instruction in _final(instructions, "COPY"):
        *sources, target = instruction.operands()
        if target.startswith(CONFIG_DIR) and "from" not in instruction.flags():
            assert len(sources) == 1
            return ROOT / sources[0]
    raise AssertionError(f"no COPY into {CONFIG_DIR} in the final stage")


# -- the Dockerfile's rules ----------------------------------------------------------------------


def test_two_stages_from_pinned_python_311_the_final_one_slim(instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "a multi-stage build: wheels are built in a stage of their own"
    args = {
        i.operands()[0].partition("=")[0]: i.operands()[0].partition("=")[2]
        for i in instructions
        if i.keyword == "ARG" and i.stage == -1
    }
    tags = []
    for instruction in froms:
        image = instruction.operands()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.partition("@")[0].partition(":")
        assert name in {"python", "docker.io/library/python"}, image
        # A full version: not `latest`, not a floating `3.11`.
        assert re.fullmatch(r"3\.11\.\d+(-slim)?(-[a-z]+)?", tag), f"line {instruction.line}: {image}"
        tags.append(tag)
    # The image is the slim variant; the build stage may have the compiler (the full variant) but
    # must be the same Python on the same Debian release, so the compiled decoder runs in the image.
    assert re.fullmatch(r"3\.11\.\d+-slim(-[a-z]+)?", tags[-1]), tags
    assert tags[0].replace("-slim", "") == tags[-1].replace("-slim", ""), tags
    assert [w.upper() for w in froms[0].operands()[1:]] == ["AS", "BUILD"], "the wheel stage is named"


def test_wheels_come_from_the_hashed_lock_in_the_first_stage(instructions: list[Instruction]) -> None:
    first = [i for i in instructions if i.stage == 0]
    runs = " ".join(i.args for i in first if i.keyword == "RUN")
    assert re.search(r"pip wheel --require-hashes --no-deps .*-r requirements/runtime\.txt", runs)
    # Our own wheel is built offline with the locked backend, not one fetched by build isolation.
    assert re.search(r"pip wheel --no-index --no-deps --no-build-isolation .* \.$", runs, re.M)
    # The final stage installs only those wheels, offline, and resolves nothing.
    final_runs = " ".join(i.args for i in _final(instructions, "RUN"))
    assert "--mount=type=bind,from=build,source=/wheels" in final_runs
    assert "pip install --no-index --no-deps /wheels/*.whl" in final_runs
    assert "pip wheel" not in final_runs


def test_no_remote_sources_and_no_secrets(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        if instruction.keyword == "ADD":
            raise AssertionError(f"line {instruction.line}: ADD; COPY says what it does")
        if instruction.keyword == "COPY":
            assert not any("://" in word for word in instruction.operands()), instruction
        if instruction.keyword in {"ENV", "ARG"}:
            assert not re.search(r"(?i)(password|token|secret|api_?key)", instruction.args), instruction
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert not re.search(r"\b(curl|wget)\b", runs), "the build fetches nothing but locked wheels"


def test_runs_as_a_numeric_non_root_user(instructions: list[Instruction]) -> None:
    users = [i for i in instructions if i.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    last = users[-1]
    assert last.stage == max(i.stage for i in instructions)
    uid, _, gid = last.operands()[0].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit(), last
    assert int(uid) >= 1000, last
    assert gid.isdigit(), last
    assert int(gid) != 0, last
    later = [i for i in instructions if i.line > last.line]
    assert not [i for i in later if i.keyword in {"RUN", "COPY", "ADD"}], "files made after USER"


def test_read_only_root_filesystem_friendly(instructions: list[Instruction]) -> None:
    env = _env(instructions)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "the interpreter must not write .pyc next to the code"
    volumes = [word for i in _final(instructions, "VOLUME") for word in (i.exec_form() or i.operands())]
    assert volumes == [DATA_DIR]
    command = _command(instructions)
    assert command[command.index("--data-dir") + 1] == DATA_DIR
    # The data directory is the only thing the runtime user owns.
    runs = " ".join(i.args for i in _final(instructions, "RUN"))
    assert re.search(rf"install -d -o (\d+) -g \1 -m 07[0-5]0 {DATA_DIR}", runs)
    assert "chown" not in runs
    assert "chmod" not in runs


def test_ports_are_exposed_and_served(instructions: list[Instruction]) -> None:
    exposed = {word.partition("/")[0] for i in _final(instructions, "EXPOSE") for word in i.operands()}
    assert exposed == PORTS
    command = _command(instructions)
    grpc_port = command[command.index("--grpc-listen") + 1].rpartition(":")[2]
    http_port = command[command.index("--http-listen") + 1].rpartition(":")[2]
    admin_port = command[command.index("--admin-listen") + 1].rpartition(":")[2]
    prometheus_port = _env(instructions)["MIXER_PROMETHEUS_LISTEN"].rpartition(":")[2]
    assert {grpc_port, http_port, admin_port, prometheus_port} == PORTS
    # Reachable from outside the container's network namespace.
    for flag in ("--grpc-listen", "--http-listen", "--admin-listen"):
        assert command[command.index(flag) + 1].startswith("0.0.0.0:"), flag


def test_healthcheck_probes_healthz_on_the_http_port(instructions: list[Instruction]) -> None:
    checks = _final(instructions, "HEALTHCHECK")
    assert len(checks) == 1
    flags = checks[0].flags()
    assert {"interval", "timeout", "start-period", "retries"} <= flags.keys()
    probe = checks[0].exec_form()
    assert probe is not None
    assert probe[:2] == ["python", "-c"]
    command = _command(instructions)
    http_port = command[command.index("--http-listen") + 1].rpartition(":")[2]
    assert f"http://127.0.0.1:{http_port}/healthz" in probe[2]


def test_the_default_config_is_baked_in(instructions: list[Instruction]) -> None:
    source = _baked_config(instructions)
    assert source.is_file(), source
    command = _command(instructions)
    assert command[command.index("--config") + 1] == CONFIG_DIR
    # The copied sources are the ones pyproject packages.
    copied = {w for i in instructions if i.stage == 0 and i.keyword == "COPY" for w in i.operands()[:-1]}
    assert {
        "mixer",
        "adapters",
        "plugins",
        "pyproject.toml",
        "README.md",
        "requirements/runtime.txt",
    } <= copied


def _command(instructions: list[Instruction]) -> list[str]:
    entrypoint = _final(instructions, "ENTRYPOINT")
    cmd = _final(instructions, "CMD")
    assert len(entrypoint) == 1
    assert len(cmd) == 1
    left, right = entrypoint[0].exec_form(), cmd[0].exec_form()
    # Exec form, so SIGTERM reaches mixer itself (no shell in between).
    assert left is not None, entrypoint
    assert right is not None, cmd
    return [*left, *right]


# -- the image's contents, built and run here ----------------------------------------------------


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory, instructions: list[Instruction]) -> Path:
    """A fresh venv holding what the final stage installs: the locked runtime set and our wheel."""
    work = tmp_path_factory.mktemp("image")
    source = work / "src"
    source.mkdir()
    # Exactly what the first stage copies, so a file the build needs and the Dockerfile omits fails here.
    for instruction in instructions:
        if instruction.stage != 0 or instruction.keyword != "COPY":
            continue
        *names, target = instruction.operands()
        for name in names:
            src = ROOT / name
            # `COPY a b` and `COPY a dir/` as Docker reads them, relative to WORKDIR (the copy's root).
            dest = source / name if target in {".", "./"} else source / target
            if target.endswith("/") and target not in {".", "./"}:
                dest = source / target / src.name
            if src.is_dir():
                shutil.copytree(
                    src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
                )
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-index", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), "."],
        cwd=source,
    )
    built = sorted(wheels.glob("mesh_mixer-*.whl"))
    assert len(built) == 1, built
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    vpip = [str(venv / "bin" / "python"), "-m", "pip"]
    _run([*vpip, "install", "-q", "--require-hashes", "--no-deps", "-r", str(RUNTIME_LOCK)])
    _run([*vpip, "install", "-q", "--no-index", "--no-deps", str(built[0])])
    _run([*vpip, "check"])
    return venv


def _run(
    argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _image_env(venv: Path, instructions: list[Instruction]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    for name, value in _env(instructions).items():
        env[name] = value.replace("$PATH", env.get("PATH", ""))
    env["PATH"] = env["PATH"].replace("/opt/mixer/bin", str(venv / "bin"))
    return env


def _files(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in directory.rglob("*")}


def test_the_wheel_installs_the_package_not_the_checkout(image_venv: Path) -> None:
    code = "import mixer, adapters, plugins; print(mixer.__file__, adapters.__file__, plugins.__file__)"
    done = _run([str(image_venv / "bin" / "python"), "-c", code], cwd=image_venv)
    for path in done.stdout.split():
        assert path.startswith(str(image_venv)), path
    listed = _run([str(image_venv / "bin" / "mixer"), "adapters"]).stdout
    for adapter in ("prometheus", "stdio", "memquota", "redisquota", "kafka", "elasticsearch", "otlp"):
        assert adapter in listed


def test_help_and_validate_of_the_baked_config(image_venv: Path, instructions: list[Instruction]) -> None:
    mixer = str(image_venv / "bin" / "mixer")
    env = _image_env(image_venv, instructions)
    assert "serve" in _run([mixer, "--help"], env=env).stdout
    assert "--data-dir" in _run([mixer, "serve", "--help"], env=env).stdout
    _run([mixer, "validate", str(_baked_config(instructions))], env=env)
    broken = image_venv.parent / "broken.yaml"
    broken.write_text(
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r}\nspec: {match: '(('}\n"
    )
    refused = subprocess.run(
        [mixer, "validate", str(broken)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1, refused


async def test_the_image_command_serves_and_the_healthcheck_follows_it(
    image_venv: Path, instructions: list[Instruction], tmp_path: Path
) -> None:
    command = _command(instructions)
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy2(_baked_config(instructions), config / "mixer.yaml")
    data = tmp_path / "data"
    data.mkdir()
    metrics_port = free_port()
    args = command[1:]
    args[args.index("--config") + 1] = str(config)
    args[args.index("--data-dir") + 1] = str(data)
    # The launcher chooses the listen addresses (free loopback ports); the image's come first and lose.
    for flag in ("--grpc-listen", "--http-listen", "--admin-listen"):
        at = args.index(flag)
        del args[at : at + 2]
    assert args[0] == "serve"
    env = _image_env(image_venv, instructions)
    env["MIXER_PROMETHEUS_LISTEN"] = f"127.0.0.1:{metrics_port}"
    before = _files(image_venv)
    probe = instructions and _final(instructions, "HEALTHCHECK")[0].exec_form()
    assert probe
    with launcher(tmp_path) as servers:
        server = servers.start(*args[1:], env=env, command=[str(image_venv / "bin" / "mixer")])
        health = [
            str(image_venv / "bin" / "python"),
            "-c",
            probe[2].replace("127.0.0.1:9093", f"127.0.0.1:{server.http_port}"),
        ]
        assert subprocess.run(health, env=env, timeout=30, check=False).returncode == 0
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            # The baked config's demo plans decide: a demo key passes, no key is UNAUTHENTICATED.
            allowed = await check(channel, http_bag(**{"request.api_key": "demo-pro-key"}))
            assert allowed.precondition.status.code == grpc.StatusCode.OK.value[0]
            refused = await check(channel, http_bag())
            assert refused.precondition.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
            assert await report(channel, [http_bag()]) == b""
        wait_until(
            lambda: "istio_requests_total{" in http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1],
            30,
            "istio_requests_total",
        )
        assert server.stop() == 0
        assert subprocess.run(health, env=env, capture_output=True, timeout=30, check=False).returncode == 1
    # Nothing written into the installed code or the config (a read-only root filesystem would refuse it).
    assert _files(image_venv) == before
    assert sorted(p.name for p in config.iterdir()) == ["mixer.yaml"]
