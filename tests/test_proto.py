"""The generated gRPC code is reproducible from proto/ and is current."""

import filecmp
import subprocess
import sys

from conftest import REPO

from monitor.proto.saemon.v1 import monitor_pb2 as pb


def test_generated_code_matches_the_proto(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / "monitor/proto").rglob("*.py*"))
    committed = sorted(p.relative_to(REPO) for p in (REPO / "monitor/proto").rglob("*.py*"))
    assert fresh == committed
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, REPO / p, shallow=False)]
    assert not stale, f"stale generated code {stale}: run `python scripts/gen_proto.py` and commit"


def test_contract_follows_the_naming_rules():
    services = pb.DESCRIPTOR.services_by_name
    assert list(services) == ["MonitorService"]
    for method in services["MonitorService"].methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name in (f"{method.name}Response",)
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        zero = enum.values_by_number[0].name
        assert zero.endswith("_UNSPECIFIED"), zero
