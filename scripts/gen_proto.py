#!/usr/bin/env python
"""Regenerate monitor/proto/ from proto/saemon/v1/*.proto with grpcio-tools.

The protos are mapped to the virtual path monitor/proto/, so generated modules import each
other as ``monitor.proto.saemon.v1`` and need no editing. tests/test_proto.py regenerates
into a temporary folder and fails when the committed code is stale.

    python scripts/gen_proto.py            # rewrite monitor/proto/
    python scripts/gen_proto.py --out DIR  # write DIR/monitor/proto/ instead
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE = "monitor/proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    virtual = [f"{PACKAGE}/{p.relative_to(PROTO_ROOT)}" for p in protos]
    include = Path(protoc.__file__).parent / "_proto"  # well-known types
    args = [
        "protoc",
        f"-I{PACKAGE}={PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *virtual,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see above)")
    written = []
    for directory in {(out / v).parent for v in virtual} | {out / PACKAGE, out / "monitor/proto/saemon"}:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    for path in sorted((out / PACKAGE).rglob("*")):
        if path.is_file() and path.suffix in (".py", ".pyi"):
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO, help="root to write monitor/proto/ under")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out), file=sys.stderr)


if __name__ == "__main__":
    main()
