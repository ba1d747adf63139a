"""Generate the Python code for proto/*.proto (messages, gRPC stubs, .pyi types).

The generated files are committed; tests/contract/test_proto_current.py fails when they
differ from a fresh run of this script. Usage: python scripts/gen_proto.py [OUT_DIR]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def proto_files() -> list[Path]:
    return sorted((ROOT / "proto").rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside python
    for proto in proto_files():
        rel = proto.relative_to(ROOT)
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            str(rel),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {rel}")
    # Every folder on the way is a package so that `proto.order.v1` imports.
    for folder in {p.parent for p in (out_dir / "proto").rglob("*.py")}:
        while folder != out_dir:
            (folder / "__init__.py").touch()
            folder = folder.parent


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    if out == ROOT:
        generate(ROOT)
        return
    # Writing elsewhere: copy the sources so the tree under OUT mirrors the repo.
    for proto in proto_files():
        dest = out / proto.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(proto, dest)
    generate(out)


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    main()
