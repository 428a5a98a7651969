"""DigitalOcean fleet load balancer mapping: argument names are the SDK's, the provider's limits enforced."""

from __future__ import annotations

import inspect

import pytest

from polyvm.backends.digitalocean import lb as do_lb
from polyvm.fleet import parse_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"


def fleet(listeners=None, health=None, cidrs=("0.0.0.0/0",), **kw):
    lb = {"allowed_cidrs": list(cidrs), "listeners": listeners or [{"protocol": "http", "port": 80, "target_port": 8080}]}
    if health is not None:
        lb["health_check"] = health
    return parse_fleet({"name": "web", "count": 3, "vm": {"size": "small", "image": {"family": "debian",
                        "version": "12"}, "ssh": {"public_key": KEY}}, "load_balancer": lb, **kw})


def params(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "resource_name", "opts"}


@pytest.fixture(scope="module")
def do():
    return pytest.importorskip("pulumi_digitalocean")


def test_arguments_are_the_providers(do):
    f = fleet([{"protocol": "http", "port": 80, "target_port": 8080},
               {"protocol": "https", "port": 443, "target_port": 8080, "certificate": "web-cert"}],
              {"protocol": "http", "path": "/healthz"}, cidrs=["198.51.100.0/24"])
    assert do_lb.problems(f) == []
    a = do_lb.load_balancer_args(f, "fra1", "vpc-1")
    assert set(a) <= params(do.LoadBalancerArgs)
    assert a["droplet_tag"] == "polyvm-fleet-web"
    assert set(a["healthcheck"]) <= params(do.LoadBalancerHealthcheckArgs)
    assert a["healthcheck"]["path"] == "/healthz" and a["healthcheck"]["port"] == 8080
    for rule in a["forwarding_rules"]:
        assert set(rule) <= params(do.LoadBalancerForwardingRuleArgs)
    https = a["forwarding_rules"][1]
    assert (https["entry_protocol"], https["target_protocol"], https["certificate_name"]) == ("https", "http", "web-cert")
    assert set(a["firewall"]) <= params(do.LoadBalancerFirewallArgs)
    assert a["firewall"]["allows"] == ["cidr:198.51.100.0/24"]
    fw = do_lb.firewall_args(f, "lb-uid")
    assert set(fw) <= params(do.FirewallArgs)
    for rule in fw["inbound_rules"]:
        assert set(rule) <= params(do.FirewallInboundRuleArgs)
        assert rule["source_load_balancer_uids"] == ["lb-uid"]
    assert [r["port_range"] for r in fw["inbound_rules"]] == ["8080"]
    assert fw["tags"] == ["polyvm-fleet-web"]
    world = do_lb.load_balancer_args(fleet(), "fra1")
    assert "firewall" not in world and "vpc_uuid" not in world
    tcp = do_lb.load_balancer_args(fleet([{"port": 5000}], cidrs=["10.0.0.0/8"]), "fra1")
    assert "path" not in tcp["healthcheck"] and tcp["healthcheck"]["protocol"] == "tcp"


def test_values_are_in_the_sdk_docs(do):
    src = inspect.getsource(do._inputs.LoadBalancerForwardingRuleArgs)
    assert "`http`, `https`, `http2`, `http3`, `tcp`, or `udp`" in src
    assert "`http`, `https` or `tcp`" in inspect.getsource(do._inputs.LoadBalancerHealthcheckArgs)
    lb_src = inspect.getsource(do.load_balancer)
    assert "`REGIONAL`, `REGIONAL_NETWORK`, or `GLOBAL`" in lb_src and "`IPV4` or `DUALSTACK`" in lb_src
    assert "`INTERNAL` or `EXTERNAL`" in lb_src


def test_provider_limits():
    out = do_lb.problems(fleet(health={"interval_s": 2, "timeout_s": 2, "healthy_threshold": 1,
                                       "unhealthy_threshold": 11 - 1}, zones=["a"], scaling={"min": 1, "max": 3}))
    joined = "\n".join(out)
    assert "interval_s 2 (DigitalOcean takes 3-300)" in joined
    assert "timeout_s 2 (DigitalOcean takes 3-300)" in joined
    assert "healthy_threshold 1 (DigitalOcean takes 2-10)" in joined
    assert "unhealthy_threshold" not in joined
    assert "zones (" in joined and "scaling (" in joined


def test_members_need_no_extra_ingress():
    f = fleet()
    assert [r.port for r in f.member_specs(do_lb.sources(f))[0].ingress] == []
