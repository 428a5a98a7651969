"""FleetSpec: validation (every problem at once, field paths), member derivation, loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyvm.errors import ConfigError, SpecError
from polyvm.fleet import (
    FleetSpec,
    LbSources,
    fleet_from_config,
    is_fleet_document,
    load_fleet_file,
    member_problems,
    parse_fleet,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"
ROOT = Path(__file__).resolve().parents[2]


def vm(**kw):
    return {"size": "small", "image": {"family": "debian", "version": "12"}, "ssh": {"public_key": KEY},
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}], **kw}


def fleet(**kw):
    data = {"name": "web", "count": 3, "vm": vm(),
            "load_balancer": {"allowed_cidrs": ["0.0.0.0/0"], "listeners": [{"port": 80, "target_port": 8080}]}}
    data.update(kw)
    return data


def problems(data) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_fleet(data)
    return exc.value.problems


def test_members_have_stable_names_and_the_fleet_tag():
    f = parse_fleet(fleet(count=4))
    assert f.member_names == ["web-0", "web-1", "web-2", "web-3"]
    specs = f.member_specs()
    assert [s.name for s in specs] == f.member_names
    assert all(s.tags["polyvm-fleet"] == "web" for s in specs)
    # the same spec gives the same names: nothing random, nothing order-dependent
    assert parse_fleet(fleet(count=4)).member_names == f.member_names


def test_members_are_spread_over_zones_round_robin():
    f = parse_fleet(fleet(count=5, zones=["a", "b"]))
    assert [s.zone for s in f.member_specs()] == ["a", "b", "a", "b", "a"]


def test_member_ingress_admits_the_load_balancer_and_nothing_more():
    f = parse_fleet(fleet(load_balancer={
        "allowed_cidrs": ["198.51.100.0/24"],
        "listeners": [{"port": 80, "target_port": 8080}, {"port": 81, "target_port": 8080}],
        "health_check": {"protocol": "http", "port": 9000, "path": "/healthz"}}))
    sources = LbSources(traffic=("10.0.0.0/16",), health_checks=("35.191.0.0/16", "130.211.0.0/22"))
    m = f.member_specs(sources)[0]
    got = {(r.protocol, r.port, tuple(r.cidrs)) for r in m.ingress}
    assert got == {("tcp", 22, ("203.0.113.0/24",)),                      # the VM's own rule
                   ("tcp", 8080, ("10.0.0.0/16",)),                        # once, though two listeners
                   ("tcp", 9000, ("35.191.0.0/16", "130.211.0.0/22"))}    # health checks only
    # without sources (or without a load balancer) nothing is added
    assert [r.port for r in f.member_specs()[0].ingress] == [22]
    nolb = parse_fleet(fleet(load_balancer=None))
    assert [r.port for r in nolb.member_specs(sources)[0].ingress] == [22]


def test_health_check_rule_is_not_repeated_when_traffic_rule_covers_it():
    f = parse_fleet(fleet())
    m = f.member_specs(LbSources(traffic=("10.0.0.0/16",), health_checks=("10.0.0.0/16",)))[0]
    assert [r.port for r in m.ingress] == [22, 8080]


def test_health_check_defaults_to_the_first_target_port_and_bounds_detection():
    lb = parse_fleet(fleet()).load_balancer
    assert lb.health_port == 8080
    hc = lb.health_check
    assert hc.request_path is None
    assert hc.detection_bound_s() == hc.unhealthy_threshold * hc.interval_s + hc.timeout_s


def test_members_public_ip_follows_the_vm_unless_the_load_balancer_says():
    assert parse_fleet(fleet()).member_specs()[0].public_ip is True
    data = fleet()
    data["load_balancer"]["members_public_ip"] = False
    assert parse_fleet(data).member_specs()[0].public_ip is False
    data["load_balancer"]["members_public_ip"] = True
    data["vm"]["public_ip"] = False
    assert any("contradicts vm.public_ip" in p for p in problems(data))


def test_world_open_rules_are_the_ingress_rules():
    data = fleet()
    data["load_balancer"]["listeners"] = [{"port": 80, "target_port": 5432}, {"port": 2222, "target_port": 22},
                                          {"port": 443, "target_port": 8443}]
    out = problems(data)
    assert len(out) == 1
    assert out[0].startswith("load_balancer.listeners: ")
    assert "[0] (target port 5432): database port 5432 (PostgreSQL) open to 0.0.0.0/0 is refused" in out[0]
    assert "[1] (target port 22): SSH (22) open to 0.0.0.0/0 is refused" in out[0]
    assert "load_balancer.allow_public: true" in out[0]
    assert "8443" not in out[0]
    data["load_balancer"]["allow_public"] = True
    parse_fleet(data)
    data["load_balancer"]["allow_public"] = False
    data["load_balancer"]["allowed_cidrs"] = ["10.0.0.0/8"]
    parse_fleet(data)


def test_every_problem_at_once_with_field_paths():
    data = {"name": "Web", "count": 0, "vm": vm(size="huge", name="x"),
            "load_balancer": {"allowed_cidrs": ["10.0.0.0/33"],
                              "listeners": [{"port": 80, "protocol": "udp"}, {"port": 70000}],
                              "health_check": {"path": "/x", "timeout_s": 20, "interval_s": 10}}}
    assert "vm: has no name of its own (members are named <fleet name>-<index>); remove vm.name" in problems(data)
    del data["vm"]["name"]
    out = problems(data)
    joined = "\n".join(out)
    assert any(p.startswith("name: 'Web' must be") for p in out)
    assert any(p.startswith("count: ") for p in out)
    assert any(p.startswith("vm.size: unknown size 'huge'") for p in out)
    assert "load_balancer.allowed_cidrs[0]: '10.0.0.0/33' is not a CIDR" in out
    assert any(p.startswith("load_balancer.listeners[0].protocol: 'udp' is not one of") for p in out)
    assert any(p.startswith("load_balancer.listeners[1].port: ") for p in out)
    assert "path is for http/https health checks only" in joined
    assert "timeout_s (20) must not exceed interval_s (10)" in joined


def test_listener_rules():
    data = fleet()
    data["load_balancer"]["listeners"] = [{"port": 80}, {"port": 80, "target_port": 81},
                                          {"port": 443, "protocol": "https"},
                                          {"port": 444, "protocol": "tcp", "certificate": "arn:x"}]
    joined = "\n".join(problems(data))
    assert "https listeners need a certificate" in joined
    assert "certificate is for https listeners only, not tcp" in joined
    data["load_balancer"]["listeners"] = [{"port": 80}, {"port": 80, "target_port": 81}]
    assert problems(data) == ["load_balancer.listeners: listener ports must be unique; repeated: 80"]


def test_zones_scaling_and_names():
    joined = "\n".join(problems(fleet(zones=["a", "a"], vm=vm(zone="b"))))
    assert "zones: zones must be unique; repeated: a" in joined
    joined = "\n".join(problems(fleet(zones=["a"], vm=vm(zone="b"))))
    assert "vm.zone and zones are exclusive" in joined
    joined = "\n".join(problems(fleet(count=5, scaling={"min": 1, "max": 3})))
    assert "count (5) must lie within scaling min-max (1-3)" in joined
    assert any("min (4) must not exceed max (3)" in p for p in problems(fleet(scaling={"min": 4, "max": 3})))
    # the longest fleet name still gives valid hostnames for the largest fleet
    f = parse_fleet(fleet(name="a" * 52, count=100))
    assert max(len(n) for n in f.member_names) <= 63
    assert [s.name for s in f.member_specs()][-1] == "a" * 52 + "-99"
    assert any(p.startswith("name: ") for p in problems(fleet(name="a" * 53)))
    assert any(p.startswith("count: ") for p in problems(fleet(count=101)))


def test_not_a_mapping_and_unknown_fields():
    with pytest.raises(SpecError) as exc:
        parse_fleet(["web"])
    assert exc.value.problems == ["(fleet): expected a mapping of fields, got list"]
    assert "colour: unknown field" in problems(fleet(colour="blue"))[0]


def test_member_problems_reports_sources_the_rules_refuse():
    data = fleet()
    data["load_balancer"]["listeners"] = [{"port": 80, "target_port": 22}]
    data["load_balancer"]["allowed_cidrs"] = ["10.0.0.0/8"]
    f = parse_fleet(data)
    assert member_problems(f, LbSources(traffic=("10.0.0.0/8",))) == []
    out = member_problems(f, LbSources(traffic=("0.0.0.0/0",)))
    assert out and "SSH (22) open to 0.0.0.0/0 is refused" in out[0]


def test_example_fleet_yaml_loads():
    path = ROOT / "examples" / "plan" / "fleet.yaml"
    f = load_fleet_file(path)
    assert isinstance(f, FleetSpec)
    assert f.member_names == ["web-0", "web-1", "web-2"]
    assert f.load_balancer is not None and f.load_balancer.health_check.request_path == "/healthz"
    import yaml

    assert is_fleet_document(yaml.safe_load(path.read_text()))
    assert not is_fleet_document(yaml.safe_load((ROOT / "examples" / "plan" / "vm.yaml").read_text()))


def test_load_fleet_file_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_fleet_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: web\ncount: 2\nvm: {}\n")
    with pytest.raises(SpecError) as exc:
        load_fleet_file(bad)
    assert exc.value.source == str(bad)
    assert "vm.size: is required" in exc.value.problems


class FakeConfig:
    def __init__(self, values):
        self.values = values

    def get(self, key):
        return self.values.get(key)

    def get_object(self, key):
        return self.values.get(key)


def test_fleet_from_pulumi_config():
    backend, f, settings = fleet_from_config(FakeConfig({"backend": "gcp", "fleet": fleet(),
                                                         "gcp": {"project": "p"}}))
    assert (backend, f.name, settings) == ("gcp", "web", {"project": "p"})
    with pytest.raises(ConfigError, match="polyvm:backend is not set"):
        fleet_from_config(FakeConfig({"fleet": fleet()}))
    with pytest.raises(ConfigError, match="no polyvm:fleet"):
        fleet_from_config(FakeConfig({"backend": "gcp"}))
    with pytest.raises(SpecError) as exc:
        fleet_from_config(FakeConfig({"backend": "gcp", "fleet": fleet(count=0)}))
    assert exc.value.problems[0].startswith("polyvm:fleet.count: ")
    assert exc.value.source == "Pulumi config"


def test_helpers_backends_use_for_their_limits():
    lb = parse_fleet(fleet()).load_balancer
    assert lb.health_check.range_problems({"interval_s": (5, 300), "healthy_threshold": (4, 10)}, "Cloud X") == [
        "load_balancer.health_check.healthy_threshold 3 (Cloud X takes 4-10)"]
    assert lb.protocol_problems({"http"}, "layer 7 only") == ["load_balancer.listeners[0].protocol tcp (layer 7 only)"]
    assert lb.protocol_problems({"tcp"}, "x") == []
