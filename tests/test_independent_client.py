"""An independent client (Node's @grpc/grpc-js, from the npm registry) against the three real servers over
mTLS: at least one allowed and one refused call per service (Prefecture, Fuhyo, National, Admin, Health).

It reads only the .proto files, so the servers are checked against the contract, not against our own Python
stubs. The packages are installed once under ~/.cache/jukinet/grpc-js (outside the repo); without node/npm,
or when the registry cannot be reached, the module is skipped with a message saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from juki.v1 import records_pb2

from server.identity.pki import Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.population import generate
from tests.conftest import ELSEWHERE, SEEDED, Server, make_server

CACHE = Path.home() / ".cache" / "jukinet" / "grpc-js"
PACKAGES = ("@grpc/grpc-js@1.14", "@grpc/proto-loader@0.8")
SCRIPT = Path(__file__).with_name("independent_client.cjs")
REPO = Path(__file__).resolve().parents[1]
OK, PERMISSION_DENIED, UNAUTHENTICATED = 0, 7, 16  # gRPC status codes as numbers, as grpc-js gives them
# grpc.health.v1 as published by the gRPC project (its Python package ships no .proto file)
HEALTH_PROTO = """syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""

MIE = next(e.record for e in generate(SEEDED, 1) if e.record.state == records_pb2.RECORD_STATE_ACTIVE)
OTHER = next(iter(generate_elsewhere(ELSEWHERE))).record


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """@grpc/grpc-js and @grpc/proto-loader, installed from the npm registry into the cache once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("independent client skipped: node and npm are not on this machine")
    modules = CACHE / "node_modules"
    if not all((modules / "@grpc" / name / "package.json").exists() for name in ("grpc-js", "proto-loader")):
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(CACHE),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                *PACKAGES,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"independent client skipped: npm could not install {PACKAGES}: {done.stderr[-300:]}")
    return modules


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("independent"), pki_dir, with_fuhyo=True)
    Pki(pki_dir).issue("monitor", "monitor-gone", overwrite=True)
    Pki(pki_dir).revoke("monitor/monitor-gone")
    srv.start()
    yield srv
    srv.stop_all()


def run_calls(
    node_modules: Path, server: Server, tmp: Path, calls: list[tuple[str, str, str, str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Each call (identity, target, service, method, request as JSON) in one Node process."""
    pki = Pki(server.settings.pki_path)
    health = tmp / "grpc" / "health" / "v1" / "health.proto"
    health.parent.mkdir(parents=True, exist_ok=True)
    health.write_text(HEALTH_PROTO)
    steps = []
    for identity, target, service, method, request in calls:
        cert, key = pki.cert_paths(*identity.split("/"))
        steps.append(
            {
                "target": target,
                "service": service,
                "method": method,
                "request": request,
                "ca": str(pki.ca_cert_path),
                "cert": str(cert),
                "key": str(key),
            }
        )
    plan = {
        "includeDirs": [str(REPO / "proto"), str(tmp)],
        "protos": [
            "juki/v1/prefecture.proto",
            "juki/v1/fuhyo.proto",
            "juki/v1/national.proto",
            "juki/v1/admin.proto",
            "grpc/health/v1/health.proto",
        ],
        "calls": steps,
    }
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps(plan))
    done = subprocess.run(
        ["node", str(SCRIPT), str(plan_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"NODE_PATH": str(node_modules), "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def test_grpc_js_gets_allowed_calls_answered_and_refused_calls_refused_on_every_service(
    node_modules: Path, servers: Server, tmp_path: Path
) -> None:
    s = servers.settings
    pref, fuhyo, national = s.prefecture_target, s.fuhyo_target, s.national_target
    police = "bt6-police-driving-licence"
    lookup = {"resident_code": MIE.resident_code, "purpose": police}
    requester = "spiffe://juki.mie/operator/op-0001"  # the operator whose query is forwarded
    query = {"resident_code": OTHER.resident_code, "purpose": "identity-check", "requester": requester}
    calls: list[tuple[str, str, str, str, dict[str, Any]]] = [
        ("agency/police", pref, "juki.v1.Prefecture", "Lookup", lookup),
        ("monitor/monitor-01", pref, "juki.v1.Prefecture", "Lookup", lookup),
        ("agency/police", fuhyo, "juki.v1.Fuhyo", "Lookup", lookup),
        ("monitor/monitor-01", fuhyo, "juki.v1.Fuhyo", "Lookup", lookup),
        ("prefectural-server/24", national, "juki.v1.National", "Query", query),
        ("agency/police", national, "juki.v1.National", "Query", query),
        ("admin/admin-01", pref, "juki.v1.Admin", "ListOperators", {}),
        ("monitor/monitor-01", pref, "juki.v1.Admin", "ListOperators", {}),
        ("admin/admin-01", fuhyo, "juki.v1.Admin", "ListOperators", {}),
        ("auditor/auditor-01", fuhyo, "juki.v1.Admin", "RegisterOperator", {"operator_id": "op-9"}),
        *(("monitor/monitor-01", t, "grpc.health.v1.Health", "Check", {}) for t in (pref, fuhyo, national)),
        *(("monitor/monitor-gone", t, "grpc.health.v1.Health", "Check", {}) for t in (pref, fuhyo, national)),
    ]
    r = run_calls(node_modules, servers, tmp_path, calls)
    secrets = (MIE.resident_code, MIE.my_number, MIE.four_info.name_kanji, OTHER.resident_code)

    def refused(result: dict[str, Any], code: int) -> None:
        assert result["code"] == code and result["response"] is None, result
        assert not any(value in result["details"] for value in secrets)

    assert r[0]["code"] == OK and r[0]["response"]["record"]["resident_code"] == MIE.resident_code
    assert r[0]["response"]["record"]["my_number"] == MIE.my_number  # the purpose allows My Number
    refused(r[1], PERMISSION_DENIED)
    assert r[2]["code"] == OK and r[2]["response"]["record"]["resident_code"] == MIE.resident_code
    refused(r[3], PERMISSION_DENIED)
    assert r[4]["code"] == OK, r[4]
    assert [v["resident_code"] for v in r[4]["response"]["records"]] == [OTHER.resident_code]
    refused(r[5], PERMISSION_DENIED)
    for listed in (r[6], r[8]):
        assert listed["code"] == OK and "op-0001" in [
            e["operator_id"] for e in listed["response"]["operators"]
        ]
    refused(r[7], PERMISSION_DENIED)
    refused(r[9], PERMISSION_DENIED)
    assert [x["response"]["status"] for x in r[10:13]] == ["SERVING"] * 3
    for result in r[13:16]:
        refused(result, UNAUTHENTICATED)
