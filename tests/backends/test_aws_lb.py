"""AWS fleet load balancer mapping: argument names are the SDK's, AWS's limits are enforced."""

from __future__ import annotations

import inspect

import pytest

from polyvm.backends.aws import lb as aws_lb
from polyvm.fleet import parse_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"
SUBNETS = ["subnet-a", "subnet-b"]


def fleet(listeners=None, health=None, **kw):
    lb = {"allowed_cidrs": ["0.0.0.0/0"], "listeners": listeners or [{"port": 80, "target_port": 8080}]}
    if health:
        lb["health_check"] = health
    return parse_fleet({"name": "web", "count": 3, "vm": {"size": "small", "image": {"family": "debian",
                        "version": "12"}, "ssh": {"public_key": KEY}}, "load_balancer": lb, **kw})


def params(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "__self__", "resource_name", "opts"}


@pytest.fixture(scope="module")
def sdk():
    return pytest.importorskip("pulumi_aws")


def test_network_load_balancer_arguments_are_the_providers(sdk):
    f = fleet()
    assert aws_lb.problems(f, SUBNETS) == []
    lb = aws_lb.load_balancer_args(f, SUBNETS)
    assert set(lb) <= params(sdk.lb.LoadBalancerArgs)
    assert lb["load_balancer_type"] == "network" and lb["enable_cross_zone_load_balancing"] is True
    tg = aws_lb.target_group_args(f, 8080, "vpc-1")
    assert set(tg) <= params(sdk.lb.TargetGroupArgs)
    assert set(tg["health_check"]) <= params(sdk.lb.TargetGroupHealthCheckArgs)
    assert (tg["protocol"], tg["port"], tg["target_type"]) == ("TCP", 8080, "instance")
    assert tg["health_check"]["protocol"] == "TCP" and "path" not in tg["health_check"]
    listeners = aws_lb.listener_args(f, "arn:lb", {8080: "arn:tg"})
    for ln in listeners:
        assert set(ln) <= params(sdk.lb.ListenerArgs)
        for action in ln["default_actions"]:
            assert set(action) <= params(sdk.lb.ListenerDefaultActionArgs)
    assert listeners[0]["protocol"] == "TCP" and listeners[0]["port"] == 80
    att = aws_lb.attachment_args(f, {"web-0": "i-0", "web-1": "i-1", "web-2": "i-2"}, {8080: "arn:tg"})
    assert len(att) == 3 and all(set(a) <= params(sdk.lb.TargetGroupAttachmentArgs) for a in att)
    assert aws_lb.security_group_args(f, "vpc-1", "10.0.0.0/16") is None


def test_application_load_balancer_for_http_with_https_and_security_group(sdk):
    f = fleet([{"protocol": "http", "port": 80, "target_port": 8080},
               {"protocol": "https", "port": 443, "target_port": 8080, "certificate": "arn:aws:acm:cert"}],
              {"protocol": "http", "path": "/healthz"})
    assert aws_lb.problems(f, SUBNETS) == []
    lb = aws_lb.load_balancer_args(f, SUBNETS, ["sg-1"])
    assert lb["load_balancer_type"] == "application" and lb["security_groups"] == ["sg-1"]
    assert "enable_cross_zone_load_balancing" not in lb
    tg = aws_lb.target_group_args(f, 8080, "vpc-1")
    assert tg["protocol"] == "HTTP"
    assert tg["health_check"]["path"] == "/healthz" and tg["health_check"]["matcher"] == "200-399"
    https = aws_lb.listener_args(f, "arn:lb", {8080: "arn:tg"})[1]
    assert https["certificate_arn"] == "arn:aws:acm:cert" and https["ssl_policy"].startswith("ELBSecurityPolicy")
    sg = aws_lb.security_group_args(f, "vpc-1", "10.0.0.0/16")
    assert set(sg) <= params(sdk.ec2.SecurityGroupArgs)
    for rule in sg["ingress"]:
        assert set(rule) <= params(sdk.ec2.SecurityGroupIngressArgs)
    for rule in sg["egress"]:
        assert set(rule) <= params(sdk.ec2.SecurityGroupEgressArgs)
    assert {r["from_port"] for r in sg["ingress"]} == {80, 443}
    assert {(r["from_port"], tuple(r["cidr_blocks"])) for r in sg["egress"]} == {(8080, ("10.0.0.0/16",))}


def test_values_are_in_the_providers_allowed_sets(sdk):
    # The docstrings list the allowed values; keep the mapping inside them.
    assert "`application`, `gateway`, or `network`" in inspect.getsource(sdk.lb.load_balancer)
    src = inspect.getsource(sdk.lb._inputs.TargetGroupHealthCheckArgs)
    assert "The range is 5-300" in src and "The range is 2–120 seconds" in src and "The range is 2-10" in src
    assert "Must be one of `TCP`, `HTTP`, or `HTTPS`" in src


def test_aws_limits(sdk):
    def probs(**kw):
        return aws_lb.problems(fleet(**kw), SUBNETS)

    out = probs(health={"interval_s": 3, "timeout_s": 1, "healthy_threshold": 1, "unhealthy_threshold": 1})
    assert "load_balancer.health_check.interval_s 3 (an AWS target group takes 5-300)" in out
    assert "load_balancer.health_check.timeout_s 1 (an AWS target group takes 2-120)" in out
    assert any(p.startswith("load_balancer.health_check.healthy_threshold 1") for p in out)
    assert any(p.startswith("load_balancer.health_check.unhealthy_threshold 1") for p in out)
    mixed = aws_lb.problems(fleet([{"port": 80}, {"protocol": "http", "port": 81}]), SUBNETS)
    assert any("mix tcp with http/https" in p for p in mixed)
    tcp_check = aws_lb.problems(fleet([{"protocol": "http", "port": 80}]), SUBNETS)
    assert any("does not support TCP health checks" in p for p in tcp_check)
    one_subnet = aws_lb.problems(fleet([{"protocol": "http", "port": 80}], {"protocol": "http"}), ["subnet-a"])
    assert any("at least two Availability Zones" in p for p in one_subnet)
    long = parse_fleet({"name": "a" * 33, "count": 1, "vm": {"size": "small", "image": {"family": "debian",
                        "version": "12"}, "ssh": {"public_key": KEY}},
                        "load_balancer": {"allowed_cidrs": ["10.0.0.0/8"], "listeners": [{"port": 80}]}})
    assert any("at most 32 characters" in p for p in aws_lb.problems(long, SUBNETS))
    assert any(p.startswith("scaling") for p in probs(scaling={"min": 1, "max": 5}))


def test_sources_nlb_preserves_clients_alb_does_not():
    nlb = aws_lb.sources(fleet(), "10.0.0.0/16")
    assert nlb.traffic == ("0.0.0.0/0",) and nlb.health_checks == ("10.0.0.0/16",)
    alb = aws_lb.sources(fleet([{"protocol": "http", "port": 80}], {"protocol": "http"}), "10.0.0.0/16")
    assert alb.traffic == ("10.0.0.0/16",)
    m = fleet().member_specs(nlb)[0]
    assert {(r.port, tuple(r.cidrs)) for r in m.ingress} == {(8080, ("0.0.0.0/0",)), (8080, ("10.0.0.0/16",))}


def test_members_spread_over_subnets():
    assert aws_lb.member_subnets(fleet(), SUBNETS) == {"web-0": "subnet-a", "web-1": "subnet-b", "web-2": "subnet-a"}
