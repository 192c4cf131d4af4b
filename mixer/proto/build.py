"""Regenerate the committed protobuf modules from the .proto files beside this module.

``python -m mixer.proto.build`` rewrites them in place; ``--check`` regenerates into a
temporary directory and exits 1 listing every generated file that differs from the committed one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _include_dirs() -> list[str]:
    import google.rpc  # googleapis-common-protos ships google/rpc/status.proto
    import grpc_tools

    grpc_include = resources.files(grpc_tools) / "_proto"
    google_rpc_root = Path(next(iter(google.rpc.__path__))).parent.parent
    return [str(REPO_ROOT), str(grpc_include), str(google_rpc_root)]


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    args = ["grpc_tools.protoc"]
    args += [f"-I{d}" for d in _include_dirs()]
    args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    args += [str(p.relative_to(REPO_ROOT)) for p in proto_files()]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generated_files(root: Path) -> dict[str, bytes]:
    base = root / PROTO_ROOT.relative_to(REPO_ROOT)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def stale_files() -> list[str]:
    """Generated files whose committed content differs from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
    committed = generated_files(REPO_ROOT)
    return sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed modules are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale generated module: {name}", file=sys.stderr)
        return 1 if stale else 0
    generate(REPO_ROOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
