"""DigitalOcean backend: Droplet, cloud firewall, block storage volumes (pulumi-digitalocean 4.x)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import Field, field_validator

from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.hookspecs import hookimpl
from polyvm.spec import VmSpec

from . import mapping as m

_REGION_RE = re.compile(r"^[a-z]{3}[0-9]$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DigitalOceanSettings(BackendSettings):
    """Pulumi config ``polyvm:digitalocean``.

    ``region`` is the default region slug (``fra1``, ``nyc3`` …); a spec's own ``region`` wins, and one of
    the two is required. ``vpc_uuid`` places the Droplets in that VPC (else the region's default VPC).
    DigitalOcean accepts each public key once per account: when several VMs share a login key, or the key
    is already on the account, set ``register_ssh_key: false``.
    """

    region: str | None = Field(default=None, description="Default region slug, e.g. fra1 (spec.region wins).")
    vpc_uuid: str | None = Field(default=None, description="UUID of an existing VPC (else the region's default VPC).")
    register_ssh_key: bool = Field(default=True, description=(
        "Register the spec's public key as an SshKey per VM; false refers to a key already on the account by "
        "its fingerprint (DigitalOcean refuses the same public key twice, e.g. for several VMs)."))
    private_egress: bool = Field(default=False, description=(
        "A Droplet without public networking (public_ip: false) has no way out unless its VPC routes through "
        "a NAT gateway you run; true states that vpc_uuid has one (polyvm does not create it)."))

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not _REGION_RE.match(v):
            raise ValueError(f"{v!r} is not a DigitalOcean region slug (like fra1, nyc3, sgp1)")
        return v

    @field_validator("vpc_uuid")
    @classmethod
    def _vpc(cls, v: str | None) -> str | None:
        if v is not None and not _UUID_RE.match(v):
            raise ValueError(f"{v!r} is not a VPC UUID (like 8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f)")
        return v


def _numeric_id(name: str) -> str:
    return str(100000000 + int(hashlib.sha256(name.encode()).hexdigest()[:7], 16))


class DigitalOceanBackend(Backend):
    name = "digitalocean"
    description = "DigitalOcean Droplet, cloud firewall and block storage volumes (pulumi-digitalocean)"
    capabilities = Capabilities(
        firewall="cloud",
        egress="all (explicit tcp, udp, icmp rules)",
        max_data_disks=m.MAX_VOLUMES,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=True,
        os_families=frozenset({"ubuntu", "debian", "rhel"}),
        zones=False,
        load_balancer="regional Load Balancer on the fleet's Droplet tag",
        lb_protocols=frozenset({"tcp", "http", "https"}),
        notes=("rhel means Rocky Linux 9; amazon-linux only with image.image_id.digitalocean. "
               "Tags become 'key:value' tag names. The Droplet size also sets the root disk, so a large "
               "root_disk_gb picks a larger size. The firewall is bound to a tag of the VM's own that the "
               "Droplet carries from creation. user_data and ssh_keys force a new Droplet, so both are "
               "ignored after creation: a changed login key or hostname is not applied to an existing "
               "Droplet (rotate the key over SSH, or replace the Droplet on purpose with "
               "`pulumi up --replace <droplet urn>`; its volumes stay). A private Droplet (public_ip: false) "
               "needs a VPC with a NAT gateway (private_egress)."),
    )
    settings_model = DigitalOceanSettings
    sdk_modules = ("pulumi_digitalocean", "pulumi_tls")
    extra = "digitalocean"
    example_settings = {"region": "fra1"}
    mock_outputs = {
        "digitalocean:index/loadBalancer:LoadBalancer": lambda name, inputs: {
            "id": "4de7ac8b-495b-4884-9a69-1050c6793cd6", "ip": "203.0.113.80"},
        "digitalocean:index/droplet:Droplet": lambda name, inputs: {
            "id": _numeric_id(name),
            "ipv4Address": "203.0.113.20" if inputs.get("publicNetworking", True) else "",
            "ipv4AddressPrivate": "10.114.0.2",
            "urn": f"do:droplet:{_numeric_id(name)}",
        },
        "digitalocean:index/sshKey:SshKey": lambda name, inputs: {
            "id": _numeric_id(name), "fingerprint": m.ssh_key_fingerprint(inputs["publicKey"])},
        "digitalocean:index/volume:Volume": lambda name, inputs: {
            "id": "506f78a4-" + hashlib.sha256(name.encode()).hexdigest()[:4] + "-11ef-8e21-0a58ac14a1b2"},
    }
    mock_calls: dict[str, Any] = {}
    data_disk_types = frozenset({"digitalocean:index/volume:Volume"})
    replacements = (
        Replacement("digitalocean:index/droplet:Droplet",
                    ("image", "region", "publicNetworking", "sshKeys", "userData", "monitoring", "dropletAgent",
                     "vpcUuid"), f"{m.TF_DO}/droplet/resource_droplet.go (ForceNew; size, name, tags, ipv6 update)"),
        Replacement("digitalocean:index/sshKey:SshKey", ("publicKey",), f"{m.TF_DO}/sshkey/resource_ssh_key.go"),
        Replacement("digitalocean:index/firewall:Firewall", (), f"{m.TF_DO}/firewall/resource_firewall.go (no ForceNew)"),
        Replacement("digitalocean:index/volume:Volume",
                    ("region", "name", "description", "snapshotId", "initialFilesystemType", "initialFilesystemLabel"),
                    f"{m.TF_DO}/volume/resource_volume.go (size grows in place)"),
        Replacement("digitalocean:index/volumeAttachment:VolumeAttachment", ("dropletId", "volumeId"),
                    f"{m.TF_DO}/volume/resource_volume_attachment.go"),
        Replacement("digitalocean:index/loadBalancer:LoadBalancer",
                    ("region", "type", "network", "networkStack", "vpcUuid", "subnetUuid", "ip"),
                    f"{m.TF_DO}/loadbalancer/resource_loadbalancer.go (ForceNew: region, type, network, "
                    "network_stack, vpc_uuid, subnet_uuid, ip; name, forwarding rules, health check, tag and "
                    "firewall update in place; tests/backends/test_lb_replacements.py)"),
    )
    egress_rules = frozenset(m.firewall_rules(list(m.OUTBOUND_RULES), "destinationAddresses"))

    def require_sdk(self) -> dict[str, Any]:
        # pulumi-digitalocean warns about its own deprecated resources on import; not the user's concern.
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().require_sdk()

    def unsupported(self, spec: VmSpec) -> list[str]:
        out = super().unsupported(spec)
        if "digitalocean" in spec.image.image_id:
            # A custom image makes any family possible; the family then only picks the recipe.
            out = [p for p in out if not p.startswith("image.family ")]
        return out + m.unsupported(spec)

    # --- fleets ----------------------------------------------------------------------------------------
    lb_module = "polyvm.backends.digitalocean.lb"
    fleet_component = "polyvm.backends.digitalocean.fleet:DigitalOceanFleet"
    def doc_tables(self) -> dict:
        return {
            "Droplet sizes (cheapest with at least the asked vCPUs, GiB and root disk)":
                (("size slug", "vCPUs", "GiB", "root disk GiB"), list(m.DROPLET_SIZES)),
            "images": (("family", "version", "image slug"),
                       [(f, v, f"`{slug}`") for (f, v), slug in m.IMAGE_SLUGS.items()]),
            "guest paths and tags": (("what", "how"), [
                ("data disk device", f"`{m.GUEST_DEVICE_PATH.format(name='<vm>-<disk>')}`"),
                ("tag", "`key:value` (`key` for an empty value); keys with ':' are rejected"),
            ]),
        }

    def settings_problems(self, spec: VmSpec, settings: BackendSettings) -> list[str]:
        assert isinstance(settings, DigitalOceanSettings)
        problems = [] if (spec.region or settings.region) else [m.NO_REGION]
        if not spec.public_ip and not (settings.private_egress and settings.vpc_uuid):
            problems.append("public_ip: false (a Droplet without public networking has no route out, so package "
                            "installs fail; give vpc_uuid of a VPC with a NAT gateway and private_egress: true "
                            "in polyvm:digitalocean)")
        return problems

    def create(self, spec: VmSpec, settings: BackendSettings, opts: Any = None) -> Any:
        from .component import DigitalOceanVirtualMachine

        assert isinstance(settings, DigitalOceanSettings)
        return DigitalOceanVirtualMachine(spec, settings, opts)

    # --- reading a plan back (contract suite) ---------------------------------------------------------
    def _one(self, plan: Any, typ: str) -> Any:
        (res,) = plan.by_type(typ)
        return res

    def planned_ingress(self, plan: Any) -> set:
        fw = self._one(plan, "digitalocean:index/firewall:Firewall")
        return m.firewall_rules(fw.inputs.get("inboundRules") or [], "sourceAddresses")

    def planned_egress(self, plan: Any) -> set:
        fw = self._one(plan, "digitalocean:index/firewall:Firewall")
        return m.firewall_rules(fw.inputs.get("outboundRules") or [], "destinationAddresses")

    def planned_disks(self, plan: Any) -> dict[str, int]:
        vm = self._one(plan, "polyvm:digitalocean:VirtualMachine")
        prefix = f"{vm.name}-"
        return {v.inputs["name"][len(prefix):]: int(v.inputs["size"])
                for v in plan.by_type("digitalocean:index/volume:Volume")}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        droplet = self._one(plan, "digitalocean:index/droplet:Droplet")
        return m.parse_tags(list(droplet.inputs.get("tags") or []))


@hookimpl
def polyvm_register_backends(register):
    register(DigitalOceanBackend())
