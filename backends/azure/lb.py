"""Azure: a fleet's load balancer as ``azure-native`` resource arguments (pure; no SDK import).

A Standard public Load Balancer with one frontend (a Standard static public IP), one backend pool whose
addresses are the members' private IPs (an IP-based pool, so the members' NICs stay the VM backend's
business), one probe and one load-balancing rule per listener. Why not a VM scale set: fleet members are
the same VirtualMachine components as a single VM (data disks, host keys pinned at creation, stable
names ``web-0``...); a scale set is the way to ``scaling`` (min/max), the next step, and refused here.

Argument names and values are those of ``azure_native.network.LoadBalancer`` (``FrontendIPConfiguration``,
``BackendAddressPool``, ``LoadBalancerBackendAddress``, ``Probe``, ``LoadBalancingRule``, ``SubResource``)
and ``network.PublicIPAddress``, as in the installed SDK (tests/backends/test_azure_lb.py checks them).
Rules, each with its source:

* the Load Balancer is layer 4: rules take ``Tcp``, ``Udp`` or ``All`` (SDK enum ``TransportProtocol``),
  so http/https listeners (which need a proxy that speaks HTTP: Application Gateway) are refused;
* probe ``interval_in_seconds``: "The default value is 15, the minimum value is 5" (SDK docstring of
  ``Probe``); ``request_path`` "is required if a protocol is set to http. Otherwise, it is not allowed";
* ``probe_threshold`` is one number for both directions: "After failing the number of consecutive probes
  equal to this value, the endpoint will be taken out of rotation and require the same number of
  successful consecutive probes to be placed back in rotation" (SDK docstring), so healthy_threshold
  must equal unhealthy_threshold; Azure probes have no timeout setting, so an explicit timeout_s is refused;
* a Standard Load Balancer needs a Standard SKU public IP, static
  (https://learn.microsoft.com/azure/load-balancer/skus);
* probes come from 168.63.129.16, the platform's virtual public IP behind the ``AzureLoadBalancer``
  service tag (https://learn.microsoft.com/azure/load-balancer/load-balancer-custom-probe-overview#probe-source-ip-address);
  with floating IP off the backends see the clients' own addresses, so members admit ``allowed_cidrs`` on
  the target ports (https://learn.microsoft.com/azure/load-balancer/load-balancer-floating-ip).
"""

from __future__ import annotations

from typing import Any

from polyvm.fleet import FleetSpec, LbSources

PROBE_SOURCE = "168.63.129.16/32"
PROBE_MIN_INTERVAL = 5
FRONTEND = "public"
POOL = "members"
PROBE = "health"


def problems(fleet: FleetSpec) -> list[str]:
    lb = fleet.load_balancer
    if lb is None:
        return []
    out = lb.protocol_problems({"tcp"}, "Azure's Standard Load Balancer is layer 4: use tcp; HTTP needs an "
                               "Application Gateway")
    hc = lb.health_check
    if hc.interval_s < PROBE_MIN_INTERVAL:
        out.append(f"load_balancer.health_check.interval_s {hc.interval_s} (Azure probes: at least "
                   f"{PROBE_MIN_INTERVAL})")
    if hc.healthy_threshold != hc.unhealthy_threshold:
        out.append(f"load_balancer.health_check healthy_threshold {hc.healthy_threshold} != unhealthy_threshold "
                   f"{hc.unhealthy_threshold} (an Azure probe has one probe_threshold for both)")
    if "timeout_s" in hc.model_fields_set:
        out.append("load_balancer.health_check.timeout_s (Azure probes have no timeout setting)")
    if any(":" in c for c in lb.allowed_cidrs):
        out.append("load_balancer.allowed_cidrs IPv6 (the frontend here is an IPv4 public IP)")
    if fleet.scaling is not None:
        out.append("scaling (not yet: a VM scale set is the next step; use count)")
    return out


def sources(fleet: FleetSpec) -> LbSources:
    assert fleet.load_balancer is not None
    return LbSources(traffic=tuple(fleet.load_balancer.allowed_cidrs), health_checks=(PROBE_SOURCE,),
                     description="Azure load balancer")


def public_ip_args(fleet: FleetSpec) -> dict[str, Any]:
    return {"sku": {"name": "Standard", "tier": "Regional"}, "public_ip_allocation_method": "Static",
            "public_ip_address_version": "IPv4", "tags": _tags(fleet)}


def sub_id(lb_id: str, kind: str, name: str) -> dict[str, str]:
    """A ``SubResource`` pointing inside the load balancer ``lb_id`` (its full resource ID)."""
    return {"id": f"{lb_id}/{kind}/{name}"}


def load_balancer_args(fleet: FleetSpec, *, lb_id: str, public_ip_id: str, virtual_network_id: str,
                       member_ips: dict[str, str]) -> dict[str, Any]:
    """``network.LoadBalancer`` arguments (without resource group and location). ``lb_id``: the load
    balancer's own resource ID (rules refer to its parts by ID); ``member_ips``: member -> private IP."""
    lb = fleet.load_balancer
    assert lb is not None
    hc = lb.health_check
    probe: dict[str, Any] = {
        "name": PROBE,
        "protocol": {"tcp": "Tcp", "http": "Http", "https": "Https"}[hc.protocol],
        "port": lb.health_port,
        "interval_in_seconds": hc.interval_s,
        "probe_threshold": hc.unhealthy_threshold,
    }
    if hc.protocol != "tcp":
        probe["request_path"] = hc.request_path
    rules = [{
        "name": f"tcp-{ln.port}",
        "protocol": "Tcp",
        "frontend_port": ln.port,
        "backend_port": ln.member_port,
        "frontend_ip_configuration": sub_id(lb_id, "frontendIPConfigurations", FRONTEND),
        "backend_address_pool": sub_id(lb_id, "backendAddressPools", POOL),
        "probe": sub_id(lb_id, "probes", PROBE),
        "enable_floating_ip": False,
        "enable_tcp_reset": True,
        "idle_timeout_in_minutes": 4,
        "load_distribution": "Default",
        # Members reach out through their own public IP or the VM backend's outbound path, not the LB.
        "disable_outbound_snat": True,
    } for ln in lb.listeners]
    return {
        "sku": {"name": "Standard", "tier": "Regional"},
        "frontend_ip_configurations": [{"name": FRONTEND, "public_ip_address": {"id": public_ip_id}}],
        "backend_address_pools": [{
            "name": POOL,
            "load_balancer_backend_addresses": [
                {"name": name, "ip_address": member_ips[name], "virtual_network": {"id": virtual_network_id}}
                for name in fleet.member_names],
        }],
        "probes": [probe],
        "load_balancing_rules": rules,
        "tags": _tags(fleet),
    }


def _tags(fleet: FleetSpec) -> dict[str, str]:
    return {"managed-by": "polyvm", "polyvm-fleet": fleet.name, **fleet.vm.tags}
