"""nomad_nodes: the inventory built from Nomad's node list, through ``ansible-inventory`` itself.

The Nomad HTTP API is played back from ``fixtures/nomad`` by a server on 127.0.0.1 that answers
like Nomad does: ``X-Nomad-Token`` checked (403 text/plain ``ACL token not found``), unknown node
404 ``node not found``, pagination with ``per_page``/``next_token`` and ``X-Nomad-NextToken``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import FIXTURES, REPO, load_plugin, tool

nomad_nodes = load_plugin("inventory", "nomad_nodes")
NOMAD = FIXTURES / "nomad"
TOKEN = "3f6f2d3c-0e3a-4b57-9f5b-6f0b4a1d2e10"


class _NomadReplay(BaseHTTPRequestHandler):
    page_size = 2
    seen: list[tuple[str, dict[str, list[str]]]]

    def log_message(self, *args: object) -> None:
        pass

    def _text(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.server.seen.append((url.path, query))  # type: ignore[attr-defined]
        if self.headers.get("X-Nomad-Token") != TOKEN:
            return self._text(403, "ACL token not found")
        headers: dict[str, str] = {}
        if url.path == "/v1/nodes":
            nodes = json.loads((NOMAD / "nodes.json").read_text())
            start = int(query.get("next_token", ["0"])[0])
            body = nodes[start : start + self.page_size]
            if start + self.page_size < len(nodes):
                headers["X-Nomad-NextToken"] = str(start + self.page_size)
        elif url.path.startswith("/v1/node/"):
            parts = url.path.split("/")  # /v1/node/ID[/allocations]
            path = NOMAD / (f"node-{parts[3]}-allocations.json" if parts[4:] == ["allocations"] else f"node-{parts[3]}.json")
            if not path.exists():
                return self._text(404, "node not found")
            body = json.loads(path.read_text())
        else:
            return self._text(404, "Invalid URL")
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Nomad-Index", "20")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def nomad() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NomadReplay)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def inventory(
    tmp_path: Path, server: ThreadingHTTPServer, extra: str = "", token: str = TOKEN
) -> subprocess.CompletedProcess:
    source = tmp_path / "cluster.nomad.yml"
    source.write_text(
        f"plugin: nomad_nodes\naddress: http://127.0.0.1:{server.server_address[1]}\ntoken: {token}\n{extra}"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")},
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    return subprocess.run(
        [tool("ansible-inventory"), "-i", str(source), "--list"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _plain(value: object) -> object:
    """Values from Nomad reach Ansible untrusted (never templated); the JSON listing wraps them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def listing(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _plain(json.loads(proc.stdout))  # type: ignore[return-value]


def members(inv: dict, group: str) -> set[str]:
    return set(inv.get(group, {}).get("hosts", []))


def test_groups_and_host_vars(tmp_path, nomad):
    inv = listing(inventory(tmp_path, nomad))
    # Every page of the node list was read, with the token.
    assert [q.get("next_token") for p, q in nomad.seen if p == "/v1/nodes"] == [None, ["2"]]
    assert members(inv, "gpu") == {"gpu-a100-01", "gpu-h100-mig-02", "gpu-t4-07"}
    assert members(inv, "nomad_dc_dc1") == {"gpu-a100-01", "gpu-h100-mig-02", "cpu-01"}
    assert members(inv, "nomad_dc_dc_west") == {"gpu-t4-07"}
    assert members(inv, "nomad_pool_gpu") == {"gpu-a100-01", "gpu-h100-mig-02", "gpu-t4-07"}
    assert members(inv, "nomad_class_a100") == {"gpu-a100-01"}
    assert members(inv, "nomad_class_t4_small") == {"gpu-t4-07"}
    assert members(inv, "nomad_class_none") == {"cpu-01"}
    assert members(inv, "nomad_status_ready") == {"gpu-a100-01", "gpu-h100-mig-02", "cpu-01"}
    assert members(inv, "nomad_status_down") == {"gpu-t4-07"}

    raw = json.loads(inventory(tmp_path, nomad).stdout)["_meta"]["hostvars"]["gpu-a100-01"]
    assert raw["nomad_meta"] == {"rack": {"__ansible_unsafe": "r12"}}, "node metadata must stay untrusted"
    hv = inv["_meta"]["hostvars"]
    a100 = hv["gpu-a100-01"]
    assert a100["ansible_host"] == "10.20.0.11"
    assert a100["nomad_node_id"] == "5f0a3b1e-7c2d-4e8f-9a6b-1c2d3e4f5a01"
    assert a100["nomad_eligible"] is True and a100["nomad_drain"] is False
    assert a100["nomad_version"] == "1.9.7"
    assert a100["nomad_meta"] == {"rack": "r12"}
    assert a100["nomad_attributes"]["driver.docker.runtimes"] == "io.containerd.runc.v2,nvidia,runc"
    assert a100["nomad_gpus"] == [
        {
            "model": "NVIDIA A100-SXM4-80GB",
            "mig_profile": None,
            "count": 2,
            "healthy": 1,
            "free": 0,  # the healthy one is held by a running allocation
            "memory_mib": 81920,
            "driver_version": "535.129.03",
            "ids": ["GPU-4b1f0c52-8e0d-7a51-3c9e-0d2f6a7b1c01", "GPU-9c3e2a10-51f4-4d6b-aa07-6e5b8f3d2c02"],
        }
    ]
    assert a100["nomad_gpus_free"] == {"NVIDIA A100-SXM4-80GB": 0}
    # MIG devices are GPU types of their own; an allocation being stopped or completed frees its GPU
    h100 = hv["gpu-h100-mig-02"]
    assert h100["nomad_gpus_free"] == {
        "NVIDIA H100 80GB HBM3": 1,
        "NVIDIA H100 80GB HBM3 MIG 1g.10gb": 1,
        "NVIDIA H100 80GB HBM3 MIG 3g.40gb": 1,
    }
    mig = {g["model"]: g for g in h100["nomad_gpus"]}["NVIDIA H100 80GB HBM3 MIG 3g.40gb"]
    assert (mig["mig_profile"], mig["count"], mig["healthy"], mig["memory_mib"]) == ("3g.40gb", 2, 2, 40448)
    cpu = hv["cpu-01"]
    assert cpu["nomad_gpus"] == [] and cpu["nomad_eligible"] is False and cpu["nomad_drain"] is True
    assert cpu["nomad_gpus_free"] == {}
    # allocations are read only for nodes with GPUs
    read = {p.split("/")[3] for p, _ in nomad.seen if p.endswith("/allocations")}
    assert read == {a100["nomad_node_id"], h100["nomad_node_id"], hv["gpu-t4-07"]["nomad_node_id"]}


def test_statuses_filter_and_constructed_groups(tmp_path, nomad):
    extra = (
        "statuses: [ready]\n"
        "filter: 'Datacenter == \"dc1\"'\n"
        "keyed_groups:\n  - key: nomad_attributes['cpu.arch']\n    prefix: arch\n"
        "groups:\n  drained: nomad_drain\n"
        "compose:\n  gpu_count: nomad_gpus | map(attribute='count') | sum\n"
    )
    inv = listing(inventory(tmp_path, nomad, extra))
    hosts = set(inv["_meta"]["hostvars"])
    assert hosts == {"gpu-a100-01", "gpu-h100-mig-02", "cpu-01"}
    assert members(inv, "arch_amd64") == {"gpu-a100-01", "gpu-h100-mig-02", "cpu-01"}
    assert members(inv, "drained") == {"cpu-01"}
    assert inv["_meta"]["hostvars"]["gpu-a100-01"]["gpu_count"] == 2

    assert next(q["filter"] for p, q in nomad.seen if p == "/v1/nodes") == ['Datacenter == "dc1"']


def test_free_gpus_can_be_left_out(tmp_path, nomad):
    inv = listing(inventory(tmp_path, nomad, "free_gpus: false\n"))
    gpus = inv["_meta"]["hostvars"]["gpu-h100-mig-02"]["nomad_gpus"]
    assert {g["free"] for g in gpus} == {None} and not any(p.endswith("/allocations") for p, _ in nomad.seen)


def test_host_name_id(tmp_path, nomad):
    inv = listing(inventory(tmp_path, nomad, "host_name: id\n"))
    assert "c0ffee00-1111-4222-8333-444455556603" in inv["_meta"]["hostvars"]


def test_wrong_token_says_so(tmp_path, nomad):
    proc = inventory(tmp_path, nomad, token="not-the-token")
    assert proc.returncode != 0
    assert "answered 403" in proc.stderr and "ACL token not found" in proc.stderr
    assert "node:read" in proc.stderr


def test_unreachable_nomad_says_where(tmp_path):
    source = tmp_path / "down.nomad.yml"
    source.write_text("plugin: nomad_nodes\naddress: http://127.0.0.1:9\ntimeout: 2\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
    }
    proc = subprocess.run(
        [tool("ansible-inventory"), "-i", str(source), "--list"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot reach Nomad at http://127.0.0.1:9" in proc.stderr


def test_file_names_the_plugin_reads():
    plugin = nomad_nodes.InventoryModule()
    assert plugin.verify_file(str(NOMAD / "nodes.json")) is False


def test_gpu_groups_ignore_other_devices():
    node = {
        "ID": "x",
        "NodeResources": {
            "Devices": [
                {"Vendor": "intel", "Type": "fpga", "Name": "x", "Instances": [{"ID": "a", "Healthy": True}]},
                {
                    "Vendor": "nvidia",
                    "Type": "gpu",
                    "Name": "NVIDIA H100 80GB HBM3",
                    "Attributes": {},
                    "Instances": [],
                },
            ]
        },
    }
    assert nomad_nodes.gpu_groups_of(node) == [
        {
            "model": "NVIDIA H100 80GB HBM3",
            "mig_profile": None,
            "count": 0,
            "healthy": 0,
            "free": None,
            "memory_mib": None,
            "driver_version": None,
            "ids": [],
        }
    ]
    assert nomad_nodes.host_vars_of(node)["nomad_node_pool"] == "default"
