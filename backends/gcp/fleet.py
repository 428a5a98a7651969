"""The GCP Fleet component: members (GcpVirtualMachine children in the shared network, over the fleet's
zones) behind a backend service-based regional external passthrough Network Load Balancer. Thin Pulumi
calls over lb.py."""

from __future__ import annotations

from typing import Any

import pulumi_gcp as gcp

from polyvm.fleet_component import Fleet

from . import GcpSettings
from . import lb as lbm
from . import mapping as m


class GcpFleet(Fleet):
    settings: GcpSettings

    def declare_load_balancer(self) -> tuple[Any, Any]:
        fleet, st = self.fleet, self.settings
        assert st.network  # fleet_settings_problems refused it otherwise
        project = {"project": st.project}
        region, zone = m.placement(fleet.vm, st.region, st.zone)
        assert region and zone
        address = gcp.compute.Address(f"{fleet.name}-lb-ip", **lbm.address_args(fleet, region), **project,
                                      opts=self.child_opts())
        check = gcp.compute.RegionHealthCheck(f"{fleet.name}-hc", **lbm.health_check_args(fleet, region), **project,
                                              opts=self.child_opts())
        groups = []
        for z, names in lbm.member_zones(fleet, zone).items():
            links = [self.vms[n].instance.self_link for n in names]
            groups.append(gcp.compute.InstanceGroup(f"{fleet.name}-{z}", **lbm.instance_group_args(fleet, z, links, st.network),
                                                    **project, opts=self.child_opts()))
        service = gcp.compute.RegionBackendService(
            f"{fleet.name}-backend", **lbm.backend_service_args(fleet, region, check.self_link, [g.self_link for g in groups]),
            **project, opts=self.child_opts())
        gcp.compute.ForwardingRule(f"{fleet.name}-lb", **lbm.forwarding_rule_args(fleet, region, address.address, service.self_link),
                                   **project, opts=self.child_opts())
        return [address.address], None
