"""The ComponentResource every backend's Fleet is (or derives from): ``polyvm:<backend>:Fleet``.

One component per fleet; each member is the backend's own VirtualMachine component, a child of the fleet
(so a member is exactly what a single VM of that backend is: same resources, outputs, data-disk
protection); the load balancer's resources are children too; ``register_outputs`` comes last. Outputs:
:data:`~polyvm.backend.FLEET_OUTPUT_NAMES`.

A backend with a load balancer subclasses :class:`Fleet` and overrides the three hooks:
:meth:`Fleet.member_spec` (e.g. a tag the load balancer targets), :meth:`Fleet.member_settings` (e.g.
the subnet of the member's zone) and :meth:`Fleet.declare_load_balancer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import pulumi

from .backend import FLEET_OUTPUT_NAMES, OUTPUT_NAMES, BackendSettings
from .fleet import FleetSpec, LbSources
from .spec import VmSpec

if TYPE_CHECKING:
    from .backend import Backend


class Fleet(pulumi.ComponentResource):
    """N members (VirtualMachine children, in index order), optionally behind a load balancer."""

    members: pulumi.Output[dict[str, dict[str, Any]]]
    lb_addresses: pulumi.Output[list[str]]
    lb_dns_name: pulumi.Output[Any]

    def __init__(self, backend: "Backend", fleet: FleetSpec, settings: BackendSettings,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"polyvm:{backend.name}:Fleet", fleet.name, None, opts)
        self.backend = backend
        self.fleet = fleet
        self.settings = settings
        sources = backend.fleet_sources(fleet, settings) if fleet.load_balancer is not None else None
        self.member_specs: list[VmSpec] = [self.member_spec(i, s)
                                           for i, s in enumerate(fleet.member_specs(sources))]
        #: member name -> its VirtualMachine component
        self.vms: dict[str, Any] = {}
        for i, spec in enumerate(self.member_specs):
            self.vms[spec.name] = backend.create(spec, self.member_settings(i, spec),
                                                 pulumi.ResourceOptions(parent=self))
        addresses: Any = []
        dns_name: Any = None
        if fleet.load_balancer is not None:
            addresses, dns_name = self.declare_load_balancer()
        self.members = pulumi.Output.from_input(
            {name: {k: getattr(vm, k) for k in OUTPUT_NAMES} for name, vm in self.vms.items()})
        self.lb_addresses = pulumi.Output.from_input(addresses)
        self.lb_dns_name = pulumi.Output.from_input(dns_name)
        self.register_outputs({k: getattr(self, k) for k in FLEET_OUTPUT_NAMES})

    # --- hooks for a backend's subclass -------------------------------------------------------------------
    def member_spec(self, index: int, spec: VmSpec) -> VmSpec:
        """The spec member ``index`` is declared with (default: FleetSpec.member_specs' own)."""
        return spec

    def member_settings(self, index: int, spec: VmSpec) -> BackendSettings:
        """The backend settings member ``index`` is declared with (default: the fleet's)."""
        return self.settings

    def declare_load_balancer(self) -> tuple[Sequence[Any] | pulumi.Output[Any], Any]:
        """Declare the load balancer's resources (children, ``opts=self.child_opts()``) after the members;
        return (its addresses, its DNS name or None)."""
        raise NotImplementedError(f"backend {self.backend.name!r} declares no load balancer")

    # --- helpers ----------------------------------------------------------------------------------------
    def child_opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def lb_sources(self) -> LbSources | None:
        return self.backend.fleet_sources(self.fleet, self.settings)
