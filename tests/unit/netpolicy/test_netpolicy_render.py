"""The workspace firewall's rule set: rendering, validation, nft's own check, Ansible parity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml_agent.errors import InvalidArgument
from fetchml_agent.netpolicy import TEMPLATE, Destination, Firewall, NetPolicy, WorkspaceNet, render

POLICY = NetPolicy(
    table="fmltest_unit",
    index=("172.17.0.1", 9101),
    dns=("10.0.0.53",),
    allow=(Destination("192.0.2.0/24", 443, "tcp"), Destination("fd00:5::/64", None, "udp")),
)
NETS = [
    WorkspaceNet("alpha", "fmlaaaa", "10.213.0.0/28"),
    WorkspaceNet("beta-2", "fmlbbbb", "10.213.0.16/28"),
]

needs_nft = pytest.mark.skipif(
    shutil.which("nft") is None or os.geteuid() != 0,
    reason="needs root and nft (nftables) to check rule sets",
)


def chain(text: str, name: str) -> list[str]:
    body = text.split(f"\tchain {name} {{\n", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_replaces_only_its_own_table_atomically() -> None:
    text = render(POLICY, NETS)
    head = [line for line in text.splitlines() if line and not line.startswith("#")][:3]
    assert head == [
        "table inet fmltest_unit {}",
        "delete table inet fmltest_unit",
        "table inet fmltest_unit {",
    ]
    assert "flush ruleset" not in text
    assert text.count("table inet ") == 3  # no other table is named


def test_every_workspace_interface_is_filtered_on_input_and_forward() -> None:
    text = render(POLICY, NETS)
    for hook in ("input", "forward"):
        rules = chain(text, hook)
        assert f"type filter hook {hook} priority filter - 10; policy accept;" in rules
        assert 'iifname "fmlaaaa" jump ws_0' in rules
        assert 'iifname "fmlbbbb" jump ws_1' in rules


def test_rule_order_index_before_workspaces_before_allowlist_then_reject() -> None:
    rules = chain(render(POLICY, NETS), "ws_1")
    assert rules[0].startswith("ct state established,related accept")
    assert "ip saddr != 10.213.0.16/28 goto block_1" in rules
    i_index = rules.index('ip daddr 172.17.0.1 tcp dport 9101 accept comment "package index"')
    i_ws = rules.index("ip daddr @workspace_nets4 goto block_1")
    i_dns = rules.index('ip daddr 10.0.0.53 meta l4proto { tcp, udp } th dport 53 accept comment "dns"')
    i_allow = rules.index('ip daddr 192.0.2.0/24 tcp dport 443 accept comment "allow"')
    assert i_index < i_ws < i_dns < i_allow  # an allow entry can never open another workspace
    assert 'ip6 daddr fd00:5::/64 meta l4proto udp accept comment "allow"' in rules
    assert rules[-1] == "goto block_1"


def test_blocked_packets_are_counted_logged_with_a_rate_and_rejected() -> None:
    text = render(POLICY, NETS)
    assert "counter blocked_beta-2 {" in text
    assert chain(text, "block_1") == [
        'limit rate 10/minute log prefix "fetchml blocked beta-2: " level warn',
        'counter name "blocked_beta-2"',
        "meta l4proto tcp reject with tcp reset",
        "reject with icmpx type admin-prohibited",
    ]


def test_workspace_subnets_form_sets_by_family() -> None:
    text = render(POLICY, [*NETS, WorkspaceNet("six", "fml6", "fd00:1::/64")])
    assert "elements = { 10.213.0.0/28, 10.213.0.16/28 }" in text
    assert "elements = { fd00:1::/64 }" in text
    assert "ip6 saddr != fd00:1::/64 goto block_2" in chain(text, "ws_2")


def test_no_workspaces_and_no_index_still_renders_the_table() -> None:
    text = render(NetPolicy(table="fmltest_unit"), [])
    assert "chain input {" in text and "chain ws_" not in text and "package index" not in text


@pytest.mark.parametrize(
    ("policy", "nets", "message"),
    [
        (NetPolicy(), [WorkspaceNet('x"; drop', "fml1")], "workspace name"),
        (NetPolicy(), [WorkspaceNet("x", "an-interface-name-too-long")], "interface"),
        (NetPolicy(), [WorkspaceNet("x", "fml1", "10.0.0.0/33")], "subnet"),
        (NetPolicy(), [WorkspaceNet("x", "fml1"), WorkspaceNet("x", "fml2")], "twice"),
        (NetPolicy(index=("not-an-ip", 80)), [], "index address"),
        (NetPolicy(index=("10.0.0.1", 70000)), [], "port"),
        (NetPolicy(dns=("8.8.8.8; accept",)), [], "dns"),
        (NetPolicy(allow=(Destination("10.0.0.0/8", 22, "icmp"),)), [], "proto"),
        (NetPolicy(allow=(Destination("10.0.0.0/8", 0, "tcp"),)), [], "port"),
        (NetPolicy(log_rate="fast"), [], "log_rate"),
        (NetPolicy(table="fetchml; flush ruleset"), [], "table"),
    ],
)
def test_values_that_could_not_be_written_safely_are_refused(
    policy: NetPolicy, nets: list[WorkspaceNet], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        render(policy, nets)


def test_policy_from_config_shapes() -> None:
    p = NetPolicy.from_config({"index": "172.17.0.1:9101", "allow": [{"addr": "192.0.2.1", "port": 443}]})
    assert p.index == ("172.17.0.1", 9101) and p.table == "fetchml"
    assert p.allow == (Destination("192.0.2.1", 443, "tcp"),)
    assert NetPolicy.from_config({"index": {"addr": "::1", "port": "80"}}).index == ("::1", 80)
    with pytest.raises(InvalidArgument):
        NetPolicy.from_config({"index": "no-port"})


@needs_nft
def test_nft_accepts_the_rendered_rule_set(tmp_path: Path) -> None:
    script = tmp_path / "fetchml.nft"
    script.write_text(render(POLICY, [*NETS, WorkspaceNet("six", "fml6*", "fd00:1::/64")]))
    out = subprocess.run(["nft", "-c", "-f", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# The project's venv first (the ansible extra), whatever PATH says; then PATH.
ANSIBLE = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")


@pytest.mark.skipif(ANSIBLE is None, reason="ansible is not installed (the ansible extra: make venv-ansible)")
def test_ansible_renders_the_same_text(tmp_path: Path) -> None:
    import yaml

    variables = {
        "table": POLICY.table,
        "workspaces": [vars(n) for n in NETS],
        "index": {"addr": "172.17.0.1", "port": 9101},
        "dns": ["10.0.0.53"],
        "allow": [
            {"addr": "192.0.2.0/24", "port": 443, "proto": "tcp"},
            {"addr": "fd00:5::/64", "port": None, "proto": "udp"},
        ],
        "log_rate": "10/minute",
    }
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(variables))
    dest = tmp_path / "out.nft"
    out = subprocess.run(
        [
            str(ANSIBLE),
            "localhost",
            "-c",
            "local",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={TEMPLATE} dest={dest}",
            "-e",
            f"@{tmp_path / 'vars.yml'}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "0"},
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:]
    assert dest.read_text() == render(POLICY, NETS)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"fmltest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


@needs_nft
def test_firewall_applies_replaces_counts_and_deletes_in_a_namespace(netns: str, run_async) -> None:
    fw = Firewall(POLICY, ("ip", "netns", "exec", netns, "nft"))
    run_async(fw.apply(NETS))
    run_async(fw.apply(NETS))  # idempotent: the swap replaces, never duplicates
    listed = run_async(fw.ruleset())
    assert listed.count('iifname "fmlaaaa" jump ws_0') == 2  # once in input, once in forward
    assert run_async(fw.blocked_counts()) == {"alpha": 0, "beta-2": 0}
    run_async(fw.apply(NETS[:1]))
    assert "fmlbbbb" not in run_async(fw.ruleset())
    run_async(fw.delete())
    assert run_async(fw.ruleset()) is None
    run_async(fw.delete())  # deleting what is gone is fine
