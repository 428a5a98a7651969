"""GCP fleet load balancer mapping: argument names are the SDK's, passthrough rules enforced."""

from __future__ import annotations

import inspect

import pytest

from polyvm.backends.gcp import lb as gcp_lb
from polyvm.fleet import parse_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"


def fleet(listeners=None, health=None, cidrs=("0.0.0.0/0",), **kw):
    lb = {"allowed_cidrs": list(cidrs), "listeners": listeners or [{"port": 80}, {"port": 443}]}
    if health is not None:
        lb["health_check"] = health
    return parse_fleet({"name": "web", "count": 3, "zones": ["europe-west1-b", "europe-west1-c"],
                        "vm": {"size": "small", "image": {"family": "debian", "version": "12"},
                               "ssh": {"public_key": KEY}}, "load_balancer": lb, **kw})


def params(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "resource_name", "opts"}


@pytest.fixture(scope="module")
def compute():
    return pytest.importorskip("pulumi_gcp.compute")


def test_arguments_are_the_providers(compute):
    f = fleet(health={"protocol": "http", "port": 80, "path": "/healthz"})
    assert gcp_lb.problems(f) == []
    addr = gcp_lb.address_args(f, "europe-west1")
    assert set(addr) <= params(compute.AddressArgs)
    hc = gcp_lb.health_check_args(f, "europe-west1")
    assert set(hc) <= params(compute.RegionHealthCheckArgs)
    assert set(hc["http_health_check"]) <= params(compute.RegionHealthCheckHttpHealthCheckArgs)
    assert hc["http_health_check"] == {"port": 80, "request_path": "/healthz"}
    tcp = gcp_lb.health_check_args(fleet(), "europe-west1")
    assert set(tcp["tcp_health_check"]) <= params(compute.RegionHealthCheckTcpHealthCheckArgs)
    zones = gcp_lb.member_zones(f, "unused")
    assert zones == {"europe-west1-b": ["web-0", "web-2"], "europe-west1-c": ["web-1"]}
    ig = gcp_lb.instance_group_args(f, "europe-west1-b", ["link0", "link2"], "net")
    assert set(ig) <= params(compute.InstanceGroupArgs)
    bs = gcp_lb.backend_service_args(f, "europe-west1", "hc-id", ["ig-b", "ig-c"])
    assert set(bs) <= params(compute.RegionBackendServiceArgs)
    for b in bs["backends"]:
        assert set(b) <= params(compute.RegionBackendServiceBackendArgs)
    fr = gcp_lb.forwarding_rule_args(f, "europe-west1", "203.0.113.7", "bs-id")
    assert set(fr) <= params(compute.ForwardingRuleArgs)
    assert fr["ports"] == ["80", "443"] and "source_ip_ranges" not in fr
    limited = gcp_lb.forwarding_rule_args(fleet(cidrs=["198.51.100.0/24"]), "europe-west1", "a", "b")
    assert limited["source_ip_ranges"] == ["198.51.100.0/24"]


def test_values_are_in_the_sdk_docs(compute):
    bs_src = inspect.getsource(compute.region_backend_service)
    assert "Possible values are: `EXTERNAL`, `EXTERNAL_MANAGED`" in bs_src
    assert "`HTTP`, `HTTPS`, `HTTP2`, `TCP`" in bs_src
    fr_src = inspect.getsource(compute.forwarding_rule)
    assert "You can specify a list of up to five ports" in fr_src
    assert "can only have up to 64 source IP ranges" in fr_src
    assert "`TCP`, `UDP`, `ESP`" in fr_src
    addr_src = inspect.getsource(compute.address)
    assert "Possible values are: `IPV4`, `IPV6`." in addr_src and "Possible values are: `PREMIUM`, `STANDARD`." in addr_src
    assert "`UTILIZATION`, `RATE`, `CONNECTION`" in inspect.getsource(compute._inputs.RegionBackendServiceBackendArgs)


def test_passthrough_rules():
    out = "\n".join(gcp_lb.problems(fleet([{"protocol": "http", "port": 80, "target_port": 8080}] +
                                          [{"port": p} for p in range(81, 86)], scaling={"min": 1, "max": 3})))
    assert "listeners[0].protocol http (GCP's passthrough" in out
    assert "listeners[0].target_port 8080 (GCP's passthrough load balancer does not change ports" in out
    assert "listeners (6; a forwarding rule takes at most 5 ports)" in out
    assert "scaling (" in out
    many = fleet(cidrs=[f"10.{i}.0.0/16" for i in range(65)])
    assert any("at most 64 source ranges" in p for p in gcp_lb.problems(many))


def test_members_admit_clients_and_the_health_check_ranges_only():
    f = fleet(health={"protocol": "tcp", "port": 80}, cidrs=["198.51.100.0/24"])
    s = gcp_lb.sources(f)
    assert s.health_checks == ("35.191.0.0/16", "130.211.0.0/22", "209.85.152.0/22", "209.85.204.0/22")
    rules = {(r.port, tuple(r.cidrs)) for r in f.member_specs(s)[0].ingress}
    assert rules == {(80, ("198.51.100.0/24",)), (443, ("198.51.100.0/24",)), (80, s.health_checks)}
