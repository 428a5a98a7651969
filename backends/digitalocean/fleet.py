"""The DigitalOcean Fleet component: members (DigitalOceanVirtualMachine children carrying the fleet's
tag) behind a regional Load Balancer on that tag, and a Cloud Firewall on the tag admitting the load
balancer. Thin Pulumi calls over lb.py."""

from __future__ import annotations

from typing import Any

import pulumi_digitalocean as do

from polyvm.fleet_component import Fleet
from polyvm.spec import VmSpec

from . import DigitalOceanSettings
from . import lb as lbm
from . import mapping as m


class DigitalOceanFleet(Fleet):
    settings: DigitalOceanSettings

    def member_spec(self, index: int, spec: VmSpec) -> VmSpec:
        # The load balancer targets Droplets by this tag (droplet_tag): an empty value makes the Droplet
        # tag exactly polyvm-fleet-<name> (mapping.tag_name).
        return VmSpec.model_validate({**spec.model_dump(), "tags": {**spec.tags, lbm.fleet_tag(self.fleet): ""}})

    def declare_load_balancer(self) -> tuple[Any, Any]:
        fleet, st = self.fleet, self.settings
        region = m.region(fleet.vm, st.region)
        # Droplets first: a tag the load balancer targets must exist when it is created.
        balancer = do.LoadBalancer(f"{fleet.name}-lb", **lbm.load_balancer_args(fleet, region, st.vpc_uuid),
                                   opts=self.child_opts(depends_on=list(self.vms.values())))
        do.Firewall(f"{fleet.name}-from-lb", **lbm.firewall_args(fleet, balancer.id),
                    opts=self.child_opts(depends_on=list(self.vms.values())))
        return [balancer.ip], None
