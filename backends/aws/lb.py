"""AWS: a fleet's load balancer as Elastic Load Balancing v2 resource arguments (pure; no SDK import).

A Network Load Balancer for ``tcp`` listeners, an Application Load Balancer for ``http``/``https`` ones;
one target group per target port (instance targets), one listener per listener, one attachment per
(member, target group); members spread over the given subnets (one per Availability Zone) round robin.

Argument names and values are those of ``pulumi_aws.lb.LoadBalancer``, ``lb.TargetGroup``,
``lb.Listener``, ``lb.TargetGroupAttachment`` and ``ec2.SecurityGroup`` (their docstrings in the
installed SDK are the registry docs; tests/backends/test_aws_lb.py checks every name against them).
Limits, each with its source:

* target group health check (SDK docstring of ``TargetGroupHealthCheck``): interval 5-300 s, timeout
  2-120 s, healthy and unhealthy thresholds 2-10; path only for HTTP/HTTPS; "The TCP protocol is not
  supported for health checks if the protocol of the target group is HTTP or HTTPS";
* load balancer and target group names: "a maximum of 32 characters, must contain only alphanumeric
  characters or hyphens, and must not begin or end with a hyphen" (SDK docstrings of ``name``);
* quotas, https://docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-limits.html:
  listeners per Network Load Balancer 50 (not adjustable); targets per Availability Zone per NLB 500;
  targets per NLB 3,000, but footnote 3: with cross-zone load balancing on (polyvm turns it on for every
  NLB) "the maximum number of targets per load balancer is 500, regardless of the number of Availability
  Zones" (read in the Japanese edition of that page, docs.aws.amazon.com/ja_jp/...); a target registered
  with N target groups counts N times (footnote 2); targets per target group per Region 1,000; and for
  Application Load Balancers,
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html:
  listeners per ALB 50;
* an Application Load Balancer needs subnets in at least two Availability Zones
  (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/application-load-balancers.html#availability-zones);
* HTTPS listeners need exactly one certificate (``certificate_arn`` docstring of ``lb.Listener``).

Where the members' traffic comes from (:func:`sources`): an NLB with instance targets preserves the
client's address (``preserve_client_ip``, default on for instance targets:
https://docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-target-groups.html#client-ip-preservation),
so members admit ``allowed_cidrs`` on the target ports; its health checks, and all ALB traffic, come from
the load balancer's own addresses inside the VPC, so members admit the VPC's CIDR for those.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from polyvm.fleet import FleetSpec, LbSources

_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
HEALTH_INTERVAL = (5, 300)
HEALTH_TIMEOUT = (2, 120)
HEALTH_THRESHOLD = (2, 10)
MAX_LISTENERS = 50
MAX_TARGETS_PER_TARGET_GROUP = 1000
#: With cross-zone load balancing on, 500 targets per NLB whatever the zones (and so below the 3,000 per NLB
#: and 500 per zone that apply without it).
MAX_TARGETS_PER_CROSS_ZONE_NLB = 500
#: A current TLS 1.3 policy of ELB (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html).
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


def load_balancer_type(fleet: FleetSpec) -> str:
    """``network`` for tcp listeners, ``application`` for http/https ones."""
    assert fleet.load_balancer is not None
    return "network" if all(ln.protocol == "tcp" for ln in fleet.load_balancer.listeners) else "application"


def target_group_name(fleet: FleetSpec, port: int) -> str:
    return f"{fleet.name}-{port}"


def problems(fleet: FleetSpec, subnet_ids: Sequence[str] = ()) -> list[str]:
    """Everything of the fleet's load balancer AWS would refuse, as 'path (why)' strings."""
    lb = fleet.load_balancer
    if lb is None:
        return []
    out = []
    protocols = {ln.protocol for ln in lb.listeners}
    if "tcp" in protocols and protocols & {"http", "https"}:
        out.append("load_balancer.listeners mix tcp with http/https (an AWS load balancer is either a Network "
                   "Load Balancer for tcp or an Application Load Balancer for http/https)")
    kind = load_balancer_type(fleet)
    hc = lb.health_check
    out += hc.range_problems({"interval_s": HEALTH_INTERVAL, "timeout_s": HEALTH_TIMEOUT,
                              "healthy_threshold": HEALTH_THRESHOLD, "unhealthy_threshold": HEALTH_THRESHOLD},
                             "an AWS target group")
    if kind == "application" and hc.protocol == "tcp":
        out.append("load_balancer.health_check.protocol tcp (AWS does not support TCP health checks for HTTP/"
                   "HTTPS target groups; use http)")
    if len(lb.listeners) > MAX_LISTENERS:
        out.append(f"load_balancer.listeners ({len(lb.listeners)}; at most {MAX_LISTENERS} per load balancer)")
    if not _NAME_RE.match(fleet.name):
        out.append(f"name {fleet.name!r} (AWS load balancer names are at most 32 characters)")
    for port in lb.target_ports:
        if not _NAME_RE.match(target_group_name(fleet, port)):
            out.append(f"name {fleet.name!r} (target group name {target_group_name(fleet, port)!r} would exceed "
                       "32 characters)")
            break
    targets = fleet.count * len(lb.target_ports)
    if fleet.count > MAX_TARGETS_PER_TARGET_GROUP:
        out.append(f"count {fleet.count} (at most {MAX_TARGETS_PER_TARGET_GROUP} targets per target group)")
    if kind == "network" and targets > MAX_TARGETS_PER_CROSS_ZONE_NLB:
        out.append(f"count {fleet.count} x {len(lb.target_ports)} target ports (at most "
                   f"{MAX_TARGETS_PER_CROSS_ZONE_NLB} targets per Network Load Balancer with cross-zone load "
                   "balancing, which polyvm turns on)")
    if kind == "application" and subnet_ids and len(subnet_ids) < 2:
        out.append("subnets (an Application Load Balancer needs subnets in at least two Availability Zones)")
    if fleet.scaling is not None:
        out.append("scaling (not yet: an Auto Scaling group is the next step; use count)")
    return out


def sources(fleet: FleetSpec, vpc_cidr: str) -> LbSources:
    """Where members see the load balancer's traffic and health checks come from."""
    assert fleet.load_balancer is not None
    if load_balancer_type(fleet) == "network":
        return LbSources(traffic=tuple(fleet.load_balancer.allowed_cidrs), health_checks=(vpc_cidr,),
                         description="AWS NLB")
    return LbSources(traffic=(vpc_cidr,), health_checks=(vpc_cidr,), description="AWS ALB")


def member_subnets(fleet: FleetSpec, subnet_ids: Sequence[str]) -> dict[str, str]:
    """Member name -> subnet, round robin: members spread over the subnets' Availability Zones."""
    return {name: subnet_ids[i % len(subnet_ids)] for i, name in enumerate(fleet.member_names)} if subnet_ids else {}


def security_group_args(fleet: FleetSpec, vpc_id: str, vpc_cidr: str) -> dict[str, Any] | None:
    """``ec2.SecurityGroup`` for an Application Load Balancer: listeners open to ``allowed_cidrs``, out only
    to the VPC on the target and health-check ports. None for a Network Load Balancer (it has none here)."""
    lb = fleet.load_balancer
    assert lb is not None
    if load_balancer_type(fleet) == "network":
        return None
    v4 = [c for c in lb.allowed_cidrs if ":" not in c]
    v6 = [c for c in lb.allowed_cidrs if ":" in c]
    ingress = [{"protocol": "tcp", "from_port": ln.port, "to_port": ln.port, "cidr_blocks": v4,
                "ipv6_cidr_blocks": v6, "description": f"listener {ln.port}"} for ln in lb.listeners]
    ports = sorted(set(lb.target_ports) | {lb.health_port})
    egress = [{"protocol": "tcp", "from_port": p, "to_port": p, "cidr_blocks": [vpc_cidr],
               "description": f"to members port {p}"} for p in ports]
    return {"vpc_id": vpc_id, "description": f"polyvm fleet {fleet.name} load balancer", "ingress": ingress,
            "egress": egress, "tags": _tags(fleet)}


def load_balancer_args(fleet: FleetSpec, subnet_ids: Sequence[str],
                       security_group_ids: Sequence[str] = ()) -> dict[str, Any]:
    lb = fleet.load_balancer
    assert lb is not None
    kind = load_balancer_type(fleet)
    args: dict[str, Any] = {
        "name": fleet.name,
        "load_balancer_type": kind,
        "internal": False,
        "subnets": list(subnet_ids),
        "ip_address_type": "dualstack" if any(":" in c for c in lb.allowed_cidrs) else "ipv4",
        "tags": _tags(fleet),
    }
    if kind == "network":
        # Off by default for NLBs (SDK docstring); on, every zone's node serves every member.
        args["enable_cross_zone_load_balancing"] = True
    else:
        args["security_groups"] = list(security_group_ids)
    return args


def target_group_args(fleet: FleetSpec, port: int, vpc_id: str) -> dict[str, Any]:
    lb = fleet.load_balancer
    assert lb is not None
    kind = load_balancer_type(fleet)
    hc = lb.health_check
    check: dict[str, Any] = {
        "enabled": True,
        "protocol": hc.protocol.upper(),
        "port": str(lb.health_port),
        "interval": hc.interval_s,
        "timeout": hc.timeout_s,
        "healthy_threshold": hc.healthy_threshold,
        "unhealthy_threshold": hc.unhealthy_threshold,
    }
    if hc.protocol != "tcp":
        check["path"] = hc.request_path
        check["matcher"] = "200-399"
    return {
        "name": target_group_name(fleet, port),
        "port": port,
        # TLS ends at the load balancer: an ALB speaks HTTP to the members.
        "protocol": "TCP" if kind == "network" else "HTTP",
        "target_type": "instance",
        "vpc_id": vpc_id,
        "health_check": check,
        # How long a deregistered member keeps serving its open connections (default 300 s).
        "deregistration_delay": 30,
        "tags": _tags(fleet),
    }


def listener_args(fleet: FleetSpec, load_balancer_arn: str, target_group_arns: dict[int, str]) -> list[dict[str, Any]]:
    """One ``lb.Listener`` per listener; ``target_group_arns``: target port -> ARN."""
    lb = fleet.load_balancer
    assert lb is not None
    out = []
    for ln in lb.listeners:
        args: dict[str, Any] = {
            "load_balancer_arn": load_balancer_arn,
            "port": ln.port,
            "protocol": ln.protocol.upper(),
            "default_actions": [{"type": "forward", "target_group_arn": target_group_arns[ln.member_port]}],
            "tags": _tags(fleet),
        }
        if ln.protocol == "https":
            args["certificate_arn"] = ln.certificate
            args["ssl_policy"] = SSL_POLICY
        out.append(args)
    return out


def attachment_args(fleet: FleetSpec, instance_ids: dict[str, str],
                    target_group_arns: dict[int, str]) -> list[dict[str, Any]]:
    """One ``lb.TargetGroupAttachment`` per (member, target group); ``instance_ids``: member -> id."""
    return [{"target_group_arn": target_group_arns[port], "target_id": instance_ids[name], "port": port}
            for name in fleet.member_names for port in sorted(target_group_arns)]


def _tags(fleet: FleetSpec) -> dict[str, str]:
    return {"Name": fleet.name, "managed-by": "polyvm", "polyvm-fleet": fleet.name, **fleet.vm.tags}
