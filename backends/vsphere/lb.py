"""vSphere: no load balancer. vSphere itself has none; NSX Advanced Load Balancer (Avi) is a separate
product with its own API and provider, not part of the vSphere provider polyvm uses (pulumi_vsphere has
no load-balancer resource). A fleet without ``load_balancer`` works (N identical VMs with stable names);
with one it is refused, saying so, before anything is declared. Alternatives (docs/fleets.md): put
HAProxy on a VM of its own in front of the members, or use NSX ALB with its own tooling.
"""

from __future__ import annotations

from polyvm.fleet import FleetSpec

REASON = ("vSphere has no native load balancer (NSX Advanced Load Balancer is a separate product, not in "
          "the vSphere provider); remove load_balancer, or run HAProxy on a VM of its own in front of the "
          "members (docs/fleets.md)")


def problems(fleet: FleetSpec) -> list[str]:
    out = []
    if fleet.load_balancer is not None:
        out.append(f"load_balancer ({REASON})")
    if fleet.scaling is not None:
        out.append("scaling (vSphere VMs do not autoscale; use count)")
    return out
