"""The Azure Fleet component: members (AzureVirtualMachine children in the shared subnet, over the
fleet's zones) behind a Standard public Load Balancer whose IP-based pool holds their private IPs.
Thin Pulumi calls over lb.py."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_azure_native as azure

from polyvm.fleet_component import Fleet

from . import AzureSettings
from . import lb as lbm
from . import mapping as m


def load_balancer_id(subnet_id: str, resource_group: str, name: str) -> str:
    """The load balancer's own resource ID (its rules refer to its parts by ID), in the subnet's subscription."""
    subscription = subnet_id.split("/")[2]
    return (f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/"
            f"loadBalancers/{name}")


def virtual_network_id(subnet_id: str) -> str:
    return subnet_id.split("/subnets/")[0]


class AzureFleet(Fleet):
    settings: AzureSettings

    def declare_load_balancer(self) -> tuple[Any, Any]:
        fleet, st = self.fleet, self.settings
        assert st.resource_group and st.subnet_id  # fleet_settings_problems refused it otherwise
        where = {"resource_group_name": st.resource_group, "location": m.location(fleet.vm, st.location)}
        name = f"{fleet.name}-lb"
        ip = azure.network.PublicIPAddress(f"{name}-ip", public_ip_address_name=f"{name}-ip", **where,
                                           **lbm.public_ip_args(fleet), opts=self.child_opts())
        lb_id = load_balancer_id(st.subnet_id, st.resource_group, name)
        member_ips = pulumi.Output.all(**{n: vm.private_ip for n, vm in self.vms.items()})
        args = pulumi.Output.all(ip.id, member_ips).apply(lambda a: lbm.load_balancer_args(
            fleet, lb_id=lb_id, public_ip_id=a[0], virtual_network_id=virtual_network_id(st.subnet_id),
            member_ips=a[1]))
        azure.network.LoadBalancer(name, load_balancer_name=name, **where,
                                   **{k: args[k] for k in ("sku", "frontend_ip_configurations",
                                                           "backend_address_pools", "probes",
                                                           "load_balancing_rules", "tags")},
                                   opts=self.child_opts())
        return [ip.ip_address], None
