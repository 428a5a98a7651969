"""GCP backend: static address, VPC firewall rules, persistent disks and a Compute Engine instance (pulumi-gcp)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from polyvm.spec import Ipv4Cidr
from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.hookspecs import hookimpl
from polyvm.spec import VmSpec

from . import mapping as m

_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


class GcpSettings(BackendSettings):
    """Pulumi config ``polyvm:gcp``.

    ``project`` is required. The zone comes from the spec (zone, or region + "-b"), else from ``zone``
    or ``region`` here. Without ``network`` a VPC network and subnetwork are created per VM, so only
    polyvm's firewall rules apply; with ``network`` that network's existing rules apply as well.
    """

    project: str = Field(description="GCP project id, e.g. my-project-123.")
    region: str | None = Field(default=None, description="Default region, e.g. europe-west1.")
    zone: str | None = Field(default=None, description="Default zone, e.g. europe-west1-b.")
    network: str | None = Field(default=None, description="Existing VPC network (name or self link).")
    subnetwork: str | None = Field(default=None, description="Existing subnetwork (with network).")
    subnet_cidr: Ipv4Cidr = Field(default="10.20.0.0/24", description="Subnetwork range (new network only).")

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not _PROJECT_RE.match(v):
            raise ValueError(f"{v!r} is not a GCP project id (6-30 lowercase letters, digits, '-')")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not m._REGION_RE.match(v):
            raise ValueError(f"{v!r} is not a GCE region (like europe-west1)")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None and not m._ZONE_RE.match(v):
            raise ValueError(f"{v!r} is not a GCE zone (like europe-west1-b)")
        return v

    @field_validator("network")
    @classmethod
    def _network(cls, v: str | None) -> str | None:
        if v is not None and v.rsplit("/", 1)[-1] == "default":
            raise ValueError("the 'default' network's default-allow-ssh rule opens SSH to the world; "
                             "leave network unset (polyvm creates one) or use a network without it")
        return v


def _instance_outputs(name: str, inputs: dict) -> dict:
    nics = [dict(n, networkIp="10.20.0.2") for n in inputs.get("networkInterfaces") or []]
    return {"networkInterfaces": nics, "selfLink": f"projects/mock/zones/{inputs.get('zone')}/instances/{name}"}


def _self_link(kind: str):
    return lambda name, inputs: {"selfLink": f"projects/mock/{kind}/{name}", "name": inputs.get("name") or name}


class GcpBackend(Backend):
    name = "gcp"
    description = "Google Compute Engine instance, VPC firewall rules, persistent disks (pulumi-gcp)"
    capabilities = Capabilities(
        firewall="cloud",
        egress="all IPv4 (explicit firewall rule)",
        max_data_disks=m.MAX_DATA_DISKS,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=True,
        os_families=m.OS_FAMILIES,
        ipv6_ingress=False,
        load_balancer="regional external passthrough Network LB",
        lb_protocols=frozenset({"tcp"}),
        notes="Ubuntu only (the GCE images with cloud-init); IPv4-only network; labels need lowercase "
              "keys and values; a private VM gets Cloud NAT for its egress (in the network polyvm creates).",
    )
    egress_rules = frozenset({("all", None, None, "0.0.0.0/0")})
    settings_model = GcpSettings
    sdk_modules = ("pulumi_gcp", "pulumi_tls")
    extra = "gcp"
    example_settings = {"project": "my-project-123", "region": "europe-west1", "zone": "europe-west1-b"}
    example_provider_config = {"gcp:project": "my-project-123"}
    mock_outputs = {
        "gcp:compute/address:Address": lambda name, inputs: {"address": "34.90.0.10",
                                                             "selfLink": f"projects/mock/addresses/{name}"},
        "gcp:compute/instance:Instance": _instance_outputs,
        "gcp:compute/disk:Disk": _self_link("disks"),
        "gcp:compute/network:Network": _self_link("networks"),
        "gcp:compute/subnetwork:Subnetwork": _self_link("subnetworks"),
        "gcp:compute/router:Router": _self_link("routers"),
        "gcp:compute/regionHealthCheck:RegionHealthCheck": _self_link("healthChecks"),
        "gcp:compute/instanceGroup:InstanceGroup": _self_link("instanceGroups"),
        "gcp:compute/regionBackendService:RegionBackendService": _self_link("backendServices"),
    }

    limits = m.LIMITS
    data_disk_types = frozenset({"gcp:compute/disk:Disk"})
    replacements = (
        Replacement("gcp:compute/instance:Instance", ("name", "zone", "project", "bootDisk", "hostname", "description"),
                    f"{m.TF_GOOGLE}/resource_compute_instance.go (ForceNew: name, project, description, boot_disk and "
                    "every initialize_params field, labels included; machine type, metadata, labels and attached "
                    "disks update in place with allow_stopping_for_update)"),
        Replacement("gcp:compute/disk:Disk", ("name", "zone", "project", "type", "image", "snapshot"),
                    f"{m.TF_GOOGLE}/resource_compute_disk.go (immutable; size grows in place)"),
        # Load balancer types below (address .. forwardingRule): every field the schema marks ForceNew
        # (hashicorp/terraform-provider-google, snapshot of 2026-08-21, commit e03b762), checked by
        # tests/backends/test_lb_replacements.py.
        Replacement("gcp:compute/address:Address",
                    ("name", "address", "addressType", "description", "ipCollection", "ipVersion",
                     "ipv6EndpointType", "network", "networkTier", "prefixLength", "purpose", "region",
                     "subnetwork", "project"),
                    f"{m.TF_GOOGLE}/resource_compute_address.go (ForceNew; labels update in place)"),
        Replacement("gcp:compute/firewall:Firewall", ("name", "network", "project", "direction"),
                    f"{m.TF_GOOGLE}/resource_compute_firewall.go"),
        Replacement("gcp:compute/network:Network", ("name", "project", "autoCreateSubnetworks"),
                    f"{m.TF_GOOGLE}/resource_compute_network.go"),
        Replacement("gcp:compute/subnetwork:Subnetwork", ("name", "network", "region", "project"),
                    f"{m.TF_GOOGLE}/resource_compute_subnetwork.go (ip_cidr_range can only grow in place)"),
        Replacement("gcp:compute/router:Router", ("name", "network", "region", "project"),
                    f"{m.TF_GOOGLE}/resource_compute_router.go"),
        Replacement("gcp:compute/routerNat:RouterNat", ("name", "router", "region", "project"),
                    f"{m.TF_GOOGLE}/resource_compute_router_nat.go"),
        Replacement("gcp:compute/regionHealthCheck:RegionHealthCheck", ("name", "region", "project"),
                    f"{m.TF_GOOGLE}/resource_compute_region_health_check.go (ForceNew: name, region, project; "
                    "intervals, thresholds and the tcp/http/https check update in place)"),
        Replacement("gcp:compute/instanceGroup:InstanceGroup", ("name", "zone", "project", "network", "description"),
                    f"{m.TF_GOOGLE}/resource_compute_instance_group.go (instances update in place)"),
        Replacement("gcp:compute/regionBackendService:RegionBackendService",
                    ("name", "region", "project", "loadBalancingScheme", "network", "params"),
                    f"{m.TF_GOOGLE}/resource_compute_region_backend_service.go (ForceNew: name, project, "
                    "load_balancing_scheme, network, params; region is Optional+Computed without ForceNew but "
                    "names the resource's URL, so polyvm counts a move as a replacement; protocol, health "
                    "checks and backends update in place)"),
        Replacement("gcp:compute/forwardingRule:ForwardingRule",
                    ("name", "region", "project", "ipAddress", "ipProtocol", "ports", "backendService",
                     "loadBalancingScheme", "networkTier", "sourceIpRanges", "allPorts", "description",
                     "ipCollection", "ipVersion", "isMirroringCollector", "network", "noAutomateDnsZone",
                     "portRange", "serviceDirectoryRegistrations", "serviceLabel", "subnetwork"),
                    f"{m.TF_GOOGLE}/resource_compute_forwarding_rule.go (labels update in place)"),
    )

    def unsupported(self, spec: VmSpec) -> list[str]:
        return super().unsupported(spec) + m.unsupported(spec)

    def settings_problems(self, spec: VmSpec, settings: BackendSettings) -> list[str]:
        assert isinstance(settings, GcpSettings)
        problems = m.placement_problems(spec, settings.region, settings.zone)
        if settings.subnetwork and not settings.network:
            problems.append("polyvm:gcp.subnetwork needs polyvm:gcp.network")
        if settings.network and not settings.subnetwork:
            # A custom-mode VPC has no subnetwork to pick by default: the instance insert fails
            # (compute.instances.insert: "subnetwork must be specified for custom mode networks").
            problems.append("polyvm:gcp.network needs polyvm:gcp.subnetwork (a custom-mode VPC, the kind "
                            "polyvm expects, cannot pick one for the instance)")
        return problems

    def create(self, spec: VmSpec, settings: BackendSettings, opts: Any = None) -> Any:
        from .component import GcpVirtualMachine

        assert isinstance(settings, GcpSettings)
        return GcpVirtualMachine(spec, settings, opts)

    # --- fleets ----------------------------------------------------------------------------------------
    lb_module = "polyvm.backends.gcp.lb"
    fleet_component = "polyvm.backends.gcp.fleet:GcpFleet"
    lb_settings = (
        ("network", "the members' shared VPC network: instance groups take instances of one network"),)

    def doc_tables(self) -> dict:
        return {
            "machine types (cheapest with at least the asked vCPUs and GiB)":
                (("machine type", "vCPUs", "GiB"), list(m.MACHINE_TYPES)),
            "images (public image families)": (("family", "version", "image"),
                                               [(f, v, f"`{i}`") for (f, v), i in m.IMAGE_FAMILIES.items()]),
        }

    # --- reading a plan back (contract suite) ---------------------------------------------------------
    def _firewalls(self, plan: Any) -> list[dict]:
        return [f.inputs for f in plan.by_type("gcp:compute/firewall:Firewall")]

    def planned_ingress(self, plan: Any) -> set:
        return m.firewall_rules(self._firewalls(plan), "INGRESS")

    def planned_egress(self, plan: Any) -> set:
        return m.firewall_rules(self._firewalls(plan), "EGRESS")

    def planned_disks(self, plan: Any) -> dict[str, int]:
        return {d.inputs["labels"]["polyvm-disk"]: int(d.inputs["size"]) for d in plan.by_type("gcp:compute/disk:Disk")}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        (vm,) = plan.by_type("gcp:compute/instance:Instance")
        return dict(vm.inputs.get("labels") or {})


@hookimpl
def polyvm_register_backends(register):
    register(GcpBackend())
