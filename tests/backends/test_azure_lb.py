"""Azure fleet load balancer mapping: argument names and values are the SDK's, Azure's rules enforced."""

from __future__ import annotations

import inspect

import pytest

from polyvm.backends.azure import lb as azure_lb
from polyvm.fleet import parse_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"
LB_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/web"


def fleet(listeners=None, health=None, **kw):
    lb = {"allowed_cidrs": ["0.0.0.0/0"], "listeners": listeners or [{"port": 80, "target_port": 8080}]}
    if health is not None:
        lb["health_check"] = health
    return parse_fleet({"name": "web", "count": 2, "vm": {"size": "small", "image": {"family": "debian",
                        "version": "12"}, "ssh": {"public_key": KEY}}, "load_balancer": lb, **kw})


def params(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "resource_name", "opts"}


@pytest.fixture(scope="module")
def net():
    return pytest.importorskip("pulumi_azure_native.network")


def args(f):
    return azure_lb.load_balancer_args(f, lb_id=LB_ID, public_ip_id="pip-id", virtual_network_id="vnet-id",
                                       member_ips={"web-0": "10.0.0.4", "web-1": "10.0.0.5"})


def test_arguments_are_the_providers(net):
    f = fleet(health={"protocol": "http", "path": "/healthz", "healthy_threshold": 2, "unhealthy_threshold": 2})
    assert azure_lb.problems(f) == []
    a = args(f)
    assert set(a) <= params(net.LoadBalancerArgs)
    assert set(a["sku"]) <= params(net.LoadBalancerSkuArgs)
    assert a["sku"]["name"] in {e.value for e in net.LoadBalancerSkuName}
    assert a["sku"]["tier"] in {e.value for e in net.LoadBalancerSkuTier}
    for fe in a["frontend_ip_configurations"]:
        assert set(fe) <= params(net.FrontendIPConfigurationArgs)
    pool = a["backend_address_pools"][0]
    assert set(pool) <= params(net.BackendAddressPoolArgs)
    assert [b["ip_address"] for b in pool["load_balancer_backend_addresses"]] == ["10.0.0.4", "10.0.0.5"]
    for b in pool["load_balancer_backend_addresses"]:
        assert set(b) <= params(net.LoadBalancerBackendAddressArgs)
    probe = a["probes"][0]
    assert set(probe) <= params(net.ProbeArgs)
    assert probe["protocol"] in {e.value for e in net.ProbeProtocol}
    assert (probe["port"], probe["request_path"], probe["probe_threshold"]) == (8080, "/healthz", 2)
    for rule in a["load_balancing_rules"]:
        assert set(rule) <= params(net.LoadBalancingRuleArgs)
        assert rule["protocol"] in {e.value for e in net.TransportProtocol}
        assert rule["load_distribution"] in {e.value for e in net.LoadDistribution}
        for ref in ("frontend_ip_configuration", "backend_address_pool", "probe"):
            assert set(rule[ref]) <= params(net.SubResourceArgs)
        assert rule["probe"]["id"] == f"{LB_ID}/probes/health"
        assert (rule["frontend_port"], rule["backend_port"]) == (80, 8080)
    pip = azure_lb.public_ip_args(f)
    assert set(pip) <= params(net.PublicIPAddressArgs)
    assert pip["sku"]["name"] in {e.value for e in net.PublicIPAddressSkuName}
    assert pip["sku"]["tier"] in {e.value for e in net.PublicIPAddressSkuTier}
    assert pip["public_ip_allocation_method"] in {e.value for e in net.IPAllocationMethod}


def test_probe_rules_are_in_the_sdk_docs(net):
    src = inspect.getsource(net._inputs.ProbeArgs)
    assert "the minimum value is 5" in src
    assert "require the same number of successful consecutive probes" in src


def test_azure_rules():
    out = azure_lb.problems(fleet([{"protocol": "http", "port": 80}],
                                  {"interval_s": 2, "timeout_s": 1, "healthy_threshold": 2,
                                   "unhealthy_threshold": 3}, scaling={"min": 1, "max": 3}))
    joined = "\n".join(out)
    assert "listeners[0].protocol http (Azure's Standard Load Balancer is layer 4" in joined
    assert "interval_s 2 (Azure probes: at least 5)" in joined
    assert "healthy_threshold 2 != unhealthy_threshold 3" in joined
    assert "timeout_s (Azure probes have no timeout setting)" in joined
    assert "scaling (" in joined
    # defaults pass: equal thresholds, no explicit timeout
    assert azure_lb.problems(fleet()) == []


def test_sources_clients_preserved_probes_from_the_platform():
    s = azure_lb.sources(fleet())
    assert s.traffic == ("0.0.0.0/0",) and s.health_checks == ("168.63.129.16/32",)
