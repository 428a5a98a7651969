"""DigitalOcean: a fleet's load balancer as ``pulumi_digitalocean`` resource arguments (pure; no SDK import).

A regional Load Balancer that targets the fleet's Droplet tag (``droplet_tag``: members join and leave by
their tag, nothing to re-attach), one forwarding rule per listener, one health check, its own firewall
restricted to ``allowed_cidrs``; and a Cloud Firewall on the same tag admitting the load balancer itself
(``source_load_balancer_uids``) on the target and health-check ports. The members' specs need no extra
ingress for the load balancer (:func:`sources` is empty): DigitalOcean firewalls add up, and this one is
the fleet's.

Argument names and values are the installed SDK's (tests/backends/test_digitalocean_lb.py checks them).
Limits: the Pulumi provider bridges DigitalOcean's Terraform provider, whose schema
(github.com/digitalocean/terraform-provider-digitalocean, digitalocean/loadbalancer/resource_loadbalancer.go)
validates ``check_interval_seconds`` 3-300, ``response_timeout_seconds`` 3-300, ``healthy_threshold`` and
``unhealthy_threshold`` 2-10, entry and target ports 1-65535, requires a health-check ``path`` for http and
https and refuses one for tcp, and takes firewall rules as ``cidr:<range>`` strings; ``entry_protocol``
is one of http, https, http2, http3, tcp, udp (SDK docstring of ``LoadBalancerForwardingRule``).
"""

from __future__ import annotations

from typing import Any

from polyvm.fleet import FleetSpec, LbSources

HEALTH_INTERVAL = (3, 300)
HEALTH_TIMEOUT = (3, 300)
HEALTH_THRESHOLD = (2, 10)


def fleet_tag(fleet: FleetSpec) -> str:
    """The Droplet tag every member carries and the load balancer targets."""
    return f"polyvm-fleet-{fleet.name}"


def problems(fleet: FleetSpec) -> list[str]:
    lb = fleet.load_balancer
    if lb is None:
        return []
    out = []
    hc = lb.health_check
    out += hc.range_problems({"interval_s": HEALTH_INTERVAL, "timeout_s": HEALTH_TIMEOUT,
                              "healthy_threshold": HEALTH_THRESHOLD, "unhealthy_threshold": HEALTH_THRESHOLD},
                             "DigitalOcean")
    if fleet.zones:
        out.append("zones (a DigitalOcean region has no zones to spread over)")
    if fleet.scaling is not None:
        out.append("scaling (DigitalOcean Droplets behind a load balancer do not autoscale here; use count)")
    return out


def sources(fleet: FleetSpec) -> LbSources:
    """Nothing in the member specs: :func:`firewall_args` admits the load balancer by its id."""
    return LbSources(description="DigitalOcean load balancer")


def load_balancer_args(fleet: FleetSpec, region: str, vpc_uuid: str | None = None) -> dict[str, Any]:
    lb = fleet.load_balancer
    assert lb is not None
    hc = lb.health_check
    check: dict[str, Any] = {
        "protocol": hc.protocol,
        "port": lb.health_port,
        "check_interval_seconds": hc.interval_s,
        "response_timeout_seconds": hc.timeout_s,
        "healthy_threshold": hc.healthy_threshold,
        "unhealthy_threshold": hc.unhealthy_threshold,
    }
    if hc.protocol != "tcp":
        check["path"] = hc.request_path
    rules = []
    for ln in lb.listeners:
        rule: dict[str, Any] = {"entry_port": ln.port, "entry_protocol": ln.protocol, "target_port": ln.member_port,
                                # TLS ends at the load balancer; members speak plain HTTP behind it.
                                "target_protocol": "http" if ln.protocol == "https" else ln.protocol}
        if ln.protocol == "https":
            rule["certificate_name"] = ln.certificate
        rules.append(rule)
    args: dict[str, Any] = {
        "name": fleet.name,
        "region": region,
        "type": "REGIONAL",
        "network": "EXTERNAL",
        "network_stack": "DUALSTACK" if any(":" in c for c in lb.allowed_cidrs) else "IPV4",
        "droplet_tag": fleet_tag(fleet),
        "forwarding_rules": rules,
        "healthcheck": check,
        "redirect_http_to_https": False,
    }
    if not any(c in ("0.0.0.0/0", "::/0") for c in lb.allowed_cidrs):
        args["firewall"] = {"allows": [f"cidr:{c}" for c in lb.allowed_cidrs]}
    if vpc_uuid:
        args["vpc_uuid"] = vpc_uuid
    return args


def firewall_args(fleet: FleetSpec, load_balancer_uid: str) -> dict[str, Any]:
    """A Cloud Firewall on the fleet's tag admitting the load balancer on the target and health ports."""
    lb = fleet.load_balancer
    assert lb is not None
    ports = sorted(set(lb.target_ports) | {lb.health_port})
    return {
        "name": f"{fleet.name}-from-lb",
        "tags": [fleet_tag(fleet)],
        "inbound_rules": [{"protocol": "tcp", "port_range": str(p), "source_load_balancer_uids": [load_balancer_uid]}
                          for p in ports],
    }
