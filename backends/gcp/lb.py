"""GCP: a fleet's load balancer as a backend service-based regional external passthrough Network Load
Balancer, in ``pulumi_gcp.compute`` resource arguments (pure; no SDK import).

Resources: a regional static external ``Address``; a ``RegionHealthCheck``; one unmanaged
``InstanceGroup`` per zone holding that zone's members (members are spread over ``zones`` round robin);
a ``RegionBackendService`` (scheme ``EXTERNAL``, protocol ``TCP``, balancing mode ``CONNECTION``) over those
groups; one ``ForwardingRule`` for the listener ports, restricted to ``allowed_cidrs``
(``source_ip_ranges``). The members' firewall (the GCP VM backend maps their ingress to
``compute.Firewall`` rules) admits the health-check ranges on the health port and the clients on the
target ports, because :func:`sources` puts both into the member specs.

Argument names and values are the installed SDK's (tests/backends/test_gcp_lb.py checks them). Rules,
each with its source:

* health-check probes come from 35.191.0.0/16 and 130.211.0.0/22, and for external passthrough Network
  Load Balancers also from 209.85.152.0/22 and 209.85.204.0/22
  (https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges and
  https://cloud.google.com/load-balancing/docs/firewall-rules; Kubernetes' GCE provider admits the same
  four ranges for its L4 load balancers);
* passthrough: "Load-balanced packets are sent to the backend VMs with their source and destination IP
  addresses, protocol, and, if applicable, ports, unchanged"
  (https://cloud.google.com/load-balancing/docs/network/networklb-backend-service), so a listener's
  target_port must equal its port, the members see the clients' addresses, and http/https (which need a
  proxy) are refused;
* ``ports``: "You can specify a list of up to five ports" (SDK docstring of ``ForwardingRule.ports``);
* ``source_ip_ranges``: "a Forwarding Rule can only have up to 64 source IP ranges, and this field can
  only be used with a regional Forwarding Rule whose scheme is EXTERNAL" (SDK docstring);
* ``timeout_sec``: "It is invalid for timeoutSec to have greater value than checkIntervalSec" (SDK
  docstring of ``RegionHealthCheck``; FleetSpec checks it for every backend).
"""

from __future__ import annotations

from typing import Any

from polyvm.fleet import FleetSpec, LbSources

HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
PASSTHROUGH_HEALTH_CHECK_RANGES = ("209.85.152.0/22", "209.85.204.0/22")
MAX_FORWARDING_RULE_PORTS = 5
MAX_SOURCE_IP_RANGES = 64


def problems(fleet: FleetSpec) -> list[str]:
    lb = fleet.load_balancer
    if lb is None:
        return []
    out = lb.protocol_problems({"tcp"}, "GCP's passthrough load balancer forwards packets; use tcp and "
                               "terminate HTTP on the members")
    for i, ln in enumerate(lb.listeners):
        if ln.member_port != ln.port:
            out.append(f"load_balancer.listeners[{i}].target_port {ln.member_port} (GCP's passthrough load "
                       f"balancer does not change ports: it must equal port {ln.port})")
    if len(lb.listeners) > MAX_FORWARDING_RULE_PORTS:
        out.append(f"load_balancer.listeners ({len(lb.listeners)}; a forwarding rule takes at most "
                   f"{MAX_FORWARDING_RULE_PORTS} ports)")
    if len(lb.allowed_cidrs) > MAX_SOURCE_IP_RANGES:
        out.append(f"load_balancer.allowed_cidrs ({len(lb.allowed_cidrs)}; a forwarding rule takes at most "
                   f"{MAX_SOURCE_IP_RANGES} source ranges)")
    if any(":" in c for c in lb.allowed_cidrs):
        out.append("load_balancer.allowed_cidrs IPv6 (the forwarding rule here has an IPv4 address)")
    if fleet.scaling is not None:
        out.append("scaling (not yet: a managed instance group is the next step; use count)")
    return out


def sources(fleet: FleetSpec) -> LbSources:
    assert fleet.load_balancer is not None
    return LbSources(traffic=tuple(fleet.load_balancer.allowed_cidrs),
                     health_checks=HEALTH_CHECK_RANGES + PASSTHROUGH_HEALTH_CHECK_RANGES,
                     description="GCP load balancer")


def _source_ranges(fleet: FleetSpec) -> list[str] | None:
    cidrs = list(fleet.load_balancer.allowed_cidrs)  # type: ignore[union-attr]
    return None if "0.0.0.0/0" in cidrs else cidrs


def address_args(fleet: FleetSpec, region: str) -> dict[str, Any]:
    return {"name": f"{fleet.name}-lb", "region": region, "address_type": "EXTERNAL", "ip_version": "IPV4",
            "network_tier": "PREMIUM", "labels": _labels(fleet)}


def health_check_args(fleet: FleetSpec, region: str) -> dict[str, Any]:
    lb = fleet.load_balancer
    assert lb is not None
    hc = lb.health_check
    args: dict[str, Any] = {
        "name": f"{fleet.name}-hc",
        "region": region,
        "check_interval_sec": hc.interval_s,
        "timeout_sec": hc.timeout_s,
        "healthy_threshold": hc.healthy_threshold,
        "unhealthy_threshold": hc.unhealthy_threshold,
    }
    if hc.protocol == "tcp":
        args["tcp_health_check"] = {"port": lb.health_port}
    else:
        args[f"{hc.protocol}_health_check"] = {"port": lb.health_port, "request_path": hc.request_path}
    return args


def member_zones(fleet: FleetSpec, default_zone: str) -> dict[str, list[str]]:
    """zone -> members in it, in member order (the spec's ``zones`` round robin, else ``default_zone``)."""
    out: dict[str, list[str]] = {}
    for spec in fleet.member_specs():
        out.setdefault(spec.zone or default_zone, []).append(spec.name)
    return out


def instance_group_args(fleet: FleetSpec, zone: str, instance_self_links: list[str], network: str) -> dict[str, Any]:
    return {"name": f"{fleet.name}-{zone}", "zone": zone, "instances": instance_self_links, "network": network,
            "description": f"polyvm fleet {fleet.name} members in {zone}"}


def backend_service_args(fleet: FleetSpec, region: str, health_check_id: str,
                         instance_group_ids: list[str]) -> dict[str, Any]:
    return {
        "name": f"{fleet.name}-backend",
        "region": region,
        "load_balancing_scheme": "EXTERNAL",
        "protocol": "TCP",
        "health_checks": health_check_id,
        "backends": [{"group": g, "balancing_mode": "CONNECTION"} for g in instance_group_ids],
        # Open connections to a member being removed may finish for this long.
        "connection_draining_timeout_sec": 30,
    }


def forwarding_rule_args(fleet: FleetSpec, region: str, address: str, backend_service_id: str) -> dict[str, Any]:
    lb = fleet.load_balancer
    assert lb is not None
    args: dict[str, Any] = {
        "name": f"{fleet.name}-lb",
        "region": region,
        "load_balancing_scheme": "EXTERNAL",
        "ip_protocol": "TCP",
        "ip_address": address,
        "ports": [str(ln.port) for ln in lb.listeners],
        "backend_service": backend_service_id,
        "network_tier": "PREMIUM",
        "labels": _labels(fleet),
    }
    ranges = _source_ranges(fleet)
    if ranges is not None:
        args["source_ip_ranges"] = ranges
    return args


def _labels(fleet: FleetSpec) -> dict[str, str]:
    return {"managed-by": "polyvm", "polyvm-fleet": fleet.name}
