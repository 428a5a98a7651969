"""render_nftables: the spec's ingress rules exactly, as a ruleset nft accepts; and enforced for real."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from polyvm.backend import spec_ingress_rules
from polyvm.firewall import render_nftables, rules_of
from polyvm.spec import IngressRule, parse_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKE30d/4vIJpwrmXgm7C2XHTsR6KFOz4Cwj5HErKUu/J t"


def spec(ingress):
    return parse_spec({"name": "fw", "size": "small", "image": {"family": "debian", "version": "12"},
                       "ssh": {"public_key": KEY}, "ingress": ingress})


FULL = [
    {"port": 22, "cidrs": ["203.0.113.0/24", "2001:db8::/32"], "description": 'admin "ssh"'},
    {"port": 5432, "cidrs": ["10.0.0.0/8"]},
    {"port": "8000-8100", "cidrs": ["10.0.0.0/8"]},
    {"protocol": "udp", "port": 51820, "cidrs": ["203.0.113.0/24"]},
    {"protocol": "icmp", "cidrs": ["203.0.113.0/24", "2001:db8::/32"]},
    {"port": 443, "cidrs": ["0.0.0.0/0", "::/0"]},
]


def test_rules_are_exactly_the_spec():
    s = spec(FULL)
    text = render_nftables(s.ingress)
    assert rules_of(text) == spec_ingress_rules(s)


def test_default_drop_and_fixed_lines():
    text = render_nftables([])
    assert "policy drop;" in text
    assert "ct state established,related accept" in text
    assert 'iif "lo" accept' in text
    assert rules_of(text) == set()
    # Reloading replaces only polyvm's own table.
    assert text.count("delete table inet polyvm") == 1


def test_families_are_split_and_icmp_maps_per_family():
    text = render_nftables(spec(FULL).ingress)
    assert "ip saddr { 203.0.113.0/24 } tcp dport 22 accept" in text
    assert "ip6 saddr { 2001:db8::/32 } tcp dport 22 accept" in text
    assert "tcp dport 8000-8100 accept" in text
    assert "ip saddr { 203.0.113.0/24 } meta l4proto icmp accept" in text
    assert "ip6 saddr { 2001:db8::/32 } meta l4proto ipv6-icmp accept" in text
    assert "ip6 saddr { 2001:db8::/32 } meta l4proto icmp " not in text


def test_comment_cannot_break_the_ruleset():
    text = render_nftables([IngressRule(port=80, cidrs=["10.0.0.0/8"], description='a "b"\n}; flush ruleset')])
    line = next(l for l in text.splitlines() if "dport 80" in l)
    assert line.count('"') == 2 and "\n" not in line


def test_allow_from_adds_management_ssh_only():
    text = render_nftables([], allow_from=["198.19.0.5/32"], ssh_port=2222)
    assert rules_of(text) == {("tcp", 2222, 2222, "198.19.0.5/32")}
    assert rules_of(render_nftables([], allow_from=None)) == set()


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None, reason="nft/unshare not installed")
def test_nft_accepts_the_ruleset():
    import os
    if os.geteuid() != 0:
        pytest.skip("nft --check needs root (netlink)")
    text = render_nftables(spec(FULL).ingress, allow_from=["198.19.0.5/32"])
    # In a throw-away network namespace, so this machine's firewall is never touched.
    for _ in range(2):  # loading twice works (the table is replaced)
        proc = subprocess.run(["unshare", "--net", "sh", "-c", "nft -f - && nft -f - </dev/null"],
                              input=text, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def _tcp_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.e2e
def test_enforced_in_a_real_host(testhosts):
    # Allow SSH and 5432 from this machine's link range, nothing else: 8080 listens but is dropped.
    rules = spec([{"port": 22, "cidrs": ["198.18.0.0/15"]}]).ingress
    (host,) = testhosts.up(firewall=[*rules, {"port": 5432, "cidrs": ["198.18.0.0/15"]}])
    for port in (5432, 8080):
        subprocess.Popen(testhosts.engine.nsenter_argv(host.record)
                         + ["python3", "-c", f"import socket,time; s=socket.socket(); s.bind(('0.0.0.0',{port}));"
                                             "s.listen(); time.sleep(120)"])
    assert testhosts.exec(host, "for i in $(seq 600); do [ $(ss -ltn | grep -c -e ':8080 ' -e ':5432 ') = 2 ] && exit 0; "
                          "sleep 0.1; done; exit 1",
                          check=True)
    assert _tcp_open(host.address, 22)
    assert _tcp_open(host.address, 5432)
    assert not _tcp_open(host.address, 8080)
    assert "policy drop" in testhosts.exec(host, "nft list table inet polyvm").stdout
