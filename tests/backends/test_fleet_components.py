"""Fleets through Pulumi (mock runtime): the program reads polyvm:fleet, `polyvm plan`/`validate` take fleet
files, and each backend's Fleet component wires its members into its load balancer."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest
import yaml
from click.testing import CliRunner

from polyvm.cli import build_cli
from polyvm.errors import SpecError
from polyvm.fleet import load_fleet_file, parse_fleet
from polyvm.plan import plan_fleet, run_mocked
from polyvm.plugins import get_backend, list_backends

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"
FLEET = EXAMPLES / "fleet.yaml"
SETTINGS = yaml.safe_load((EXAMPLES / "fleet-settings.yaml").read_text())


def _plan(backend: str, fleet=None, settings=None):
    fleet = fleet or load_fleet_file(FLEET)
    return plan_fleet(get_backend(backend), fleet, SETTINGS[backend] if settings is None else settings)


def _inputs(plan, typ):
    return [r.inputs for r in plan.by_type(typ)]


# --- the Pulumi program -------------------------------------------------------------------------------
def _run(config: dict):
    from polyvm.program import run

    return run_mocked(run, list(list_backends().values()), config=config)


def test_program_declares_a_fleet_from_polyvm_fleet_config():
    fleet = yaml.safe_load(FLEET.read_text())
    value, _mocks, monitor = _run({"polyvm:backend": "digitalocean", "polyvm:fleet": fleet,
                                   "polyvm:digitalocean": SETTINGS["digitalocean"]})
    types = [t for _u, _p, t, _n, _c in monitor.registered]
    assert types.count("polyvm:digitalocean:Fleet") == 1
    assert types.count("polyvm:digitalocean:VirtualMachine") == 3
    assert types.count("digitalocean:index/loadBalancer:LoadBalancer") == 1
    assert set(value) == {"web"}


def test_program_refuses_fleet_and_vm_together():
    fleet = yaml.safe_load(FLEET.read_text())
    with pytest.raises(pulumi.RunError, match="polyvm:fleet and polyvm:vm"):
        _run({"polyvm:backend": "digitalocean", "polyvm:fleet": fleet, "polyvm:vm": {"name": "x"}})


def test_program_lists_every_fleet_problem_and_declares_nothing():
    fleet = yaml.safe_load(FLEET.read_text())
    # under DigitalOcean's 3 s; zones DigitalOcean has not; and no region anywhere
    fleet["load_balancer"]["health_check"].update(interval_s=2, timeout_s=2)
    fleet["zones"] = ["fra1-a"]
    with pytest.raises(pulumi.RunError) as exc:
        _run({"polyvm:backend": "digitalocean", "polyvm:fleet": fleet, "polyvm:digitalocean": {}})
    msg = str(exc.value)
    assert "interval_s 2" in msg and "timeout_s 2" in msg and "zones" in msg and "region" in msg


# --- polyvm plan / validate ----------------------------------------------------------------------------
def test_plan_all_renders_every_backend_with_a_load_balancer_and_lists_the_refusals():
    result = CliRunner().invoke(build_cli(), ["plan", "--backend", "all", "--spec", str(FLEET),
                                              "--settings", str(EXAMPLES / "fleet-settings.yaml"), "--json",
                                              "--allow-refusals"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert sorted(p["backend"] for p in out["plans"]) == ["aws", "azure", "digitalocean", "gcp"]
    assert any("vSphere has no native load balancer" in p for p in out["refused"]["vsphere"])
    # local hosts run this machine's OS (debian here), not the example's ubuntu
    assert all("load_balancer" not in p for p in out["refused"].get("local", []))
    for p in out["plans"]:
        web = p["outputs"]["web"]
        assert sorted(web["members"]) == ["web-0", "web-1", "web-2"]
        assert web["lb_addresses"] or web["lb_dns_name"]


def test_validate_accepts_a_fleet_file_and_checks_it_against_a_backend(tmp_path):
    cli = build_cli()
    ok = CliRunner().invoke(cli, ["validate", "--spec", str(FLEET)])
    assert ok.exit_code == 0 and "fleet web (3 members, load balancer) valid" in ok.output
    ok = CliRunner().invoke(cli, ["validate", "--spec", str(FLEET), "--backend", "gcp"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["validate", "--spec", str(FLEET), "--backend", "vsphere"])
    assert bad.exit_code == 2 and "vSphere has no native load balancer" in bad.output
    settings = tmp_path / "s.yaml"
    settings.write_text("aws: {vpc_id: vpc-1, subnet_ids: [subnet-1]}\n")
    bad = CliRunner().invoke(cli, ["validate", "--spec", str(FLEET), "--backend", "aws", "--settings", str(settings)])
    assert bad.exit_code == 2 and "polyvm:aws.vpc_cidr" in bad.output and "subnet_ids" not in bad.output
    assert "Traceback" not in bad.output


def test_plan_against_an_older_fleet_shows_only_the_new_member(tmp_path):
    bigger = tmp_path / "fleet4.yaml"
    bigger.write_text(FLEET.read_text().replace("\ncount: 3\n", "\ncount: 4\n"))
    settings = tmp_path / "s.yaml"
    settings.write_text(yaml.safe_dump({"digitalocean": SETTINGS["digitalocean"]}))
    result = CliRunner().invoke(build_cli(), ["plan", "--backend", "digitalocean", "--spec", str(bigger),
                                              "--against", str(FLEET), "--settings", str(settings), "--json"])
    assert result.exit_code == 0, result.output
    changes = json.loads(result.stdout)["changes"]
    assert {c["action"] for c in changes} == {"create"}
    assert all("web-3" in c["name"] for c in changes)


# --- each backend's load balancer, wired to its members ------------------------------------------------
def test_aws_members_round_robin_over_the_subnets_and_each_is_attached():
    plan = _plan("aws")
    subnets = sorted((r.name, r.inputs["subnetId"]) for r in plan.by_type("aws:ec2/instance:Instance"))
    a, b = SETTINGS["aws"]["subnet_ids"]
    assert subnets == [("web-0-vm", a), ("web-1-vm", b), ("web-2-vm", a)]
    (lb,) = _inputs(plan, "aws:lb/loadBalancer:LoadBalancer")
    assert lb["loadBalancerType"] == "network" and lb["subnets"] == [a, b]
    ids = {r.id for r in plan.by_type("aws:ec2/instance:Instance")}
    attached = {i["targetId"] for i in _inputs(plan, "aws:lb/targetGroupAttachment:TargetGroupAttachment")}
    assert attached == ids and len(ids) == 3
    (tg,) = _inputs(plan, "aws:lb/targetGroup:TargetGroup")
    (listener,) = _inputs(plan, "aws:lb/listener:Listener")
    assert listener["defaultActions"][0]["targetGroupArn"].startswith("arn:aws:elasticloadbalancing")
    assert tg["vpcId"] == SETTINGS["aws"]["vpc_id"]
    # Members admit the VPC's CIDR for the NLB's health checks and the clients on the target port.
    for sg in _inputs(plan, "aws:ec2/securityGroup:SecurityGroup"):
        cidrs = {(r["fromPort"], c) for r in sg["ingress"] for c in r.get("cidrBlocks", [])}
        assert (80, "0.0.0.0/0") in cidrs and (22, "203.0.113.0/24") in cidrs


def test_azure_backend_pool_holds_the_members_private_ips_in_the_shared_vnet():
    plan = _plan("azure")
    (lb,) = _inputs(plan, "azure-native:network:LoadBalancer")
    (pool,) = lb["backendAddressPools"]
    addresses = pool["loadBalancerBackendAddresses"]
    assert sorted(a["name"] for a in addresses) == ["web-0", "web-1", "web-2"]
    vnet = SETTINGS["azure"]["subnet_id"].split("/subnets/")[0]
    assert {a["virtualNetwork"]["id"] for a in addresses} == {vnet}
    assert all(a["ipAddress"] for a in addresses)
    (rule,) = lb["loadBalancingRules"]
    assert rule["probe"]["id"].endswith("/loadBalancers/web-lb/probes/health")
    assert rule["probe"]["id"].startswith("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/web-rg/")


def test_gcp_one_instance_group_per_zone_holds_that_zones_members():
    plan = _plan("gcp", parse_fleet({**yaml.safe_load(FLEET.read_text()), "zones": ["europe-west1-b", "europe-west1-c"]}))
    groups = {g["zone"]: g["instances"] for g in _inputs(plan, "gcp:compute/instanceGroup:InstanceGroup")}
    assert sorted(groups) == ["europe-west1-b", "europe-west1-c"]
    assert [i.rsplit("/", 1)[1] for i in groups["europe-west1-b"]] == ["web-0-vm", "web-2-vm"]
    assert [i.rsplit("/", 1)[1] for i in groups["europe-west1-c"]] == ["web-1-vm"]
    (svc,) = _inputs(plan, "gcp:compute/regionBackendService:RegionBackendService")
    assert len(svc["backends"]) == 2
    (rule,) = _inputs(plan, "gcp:compute/forwardingRule:ForwardingRule")
    assert rule["ports"] == ["80"] and "sourceIpRanges" not in rule  # allowed_cidrs is the world
    # The members' firewall admits Google's health-check ranges on the health port.
    ranges = {c for f in _inputs(plan, "gcp:compute/firewall:Firewall") for c in f.get("sourceRanges", [])}
    assert {"35.191.0.0/16", "130.211.0.0/22", "209.85.152.0/22", "209.85.204.0/22"} <= ranges


def test_digitalocean_droplets_carry_the_tag_the_load_balancer_targets():
    plan = _plan("digitalocean")
    (lb,) = _inputs(plan, "digitalocean:index/loadBalancer:LoadBalancer")
    assert lb["dropletTag"] == "polyvm-fleet-web"
    droplets = _inputs(plan, "digitalocean:index/droplet:Droplet")
    assert len(droplets) == 3 and all("polyvm-fleet-web" in d["tags"] for d in droplets)
    fws = [f for f in _inputs(plan, "digitalocean:index/firewall:Firewall") if f.get("name") == "web-from-lb"]
    (fw,) = fws
    assert fw["tags"] == ["polyvm-fleet-web"]
    assert {r["portRange"] for r in fw["inboundRules"]} == {"80"}
    assert all(r["sourceLoadBalancerUids"] for r in fw["inboundRules"])


@pytest.mark.parametrize("backend,missing", [("aws", "polyvm:aws.vpc_cidr"), ("azure", "polyvm:azure.subnet_id"),
                                             ("gcp", "polyvm:gcp.network")])
def test_a_load_balancer_without_its_network_settings_is_refused_before_anything_is_declared(backend, missing):
    settings = {"aws": {}, "azure": {"location": "westeurope"},
                "gcp": {"project": "my-project-123", "zone": "europe-west1-b"}}[backend]
    with pytest.raises(SpecError, match=missing.replace(".", r"\.")):
        _plan(backend, settings=settings)


def test_a_fleet_without_load_balancer_plans_on_vsphere():
    data = yaml.safe_load(FLEET.read_text())
    del data["load_balancer"]
    plan = plan_fleet(get_backend("vsphere"), parse_fleet(data), SETTINGS["vsphere"])
    assert sorted(r.name for r in plan.by_type("polyvm:vsphere:VirtualMachine")) == ["web-0", "web-1", "web-2"]
    assert plan.outputs["web"]["lb_addresses"] == [] and plan.outputs["web"]["lb_dns_name"] is None
