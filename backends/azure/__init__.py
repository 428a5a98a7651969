"""Azure backend: resource group, VNet + subnet, Standard static public IP, NSG, NIC, VM and managed disks
(pulumi-azure-native 3.x)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from polyvm.spec import Ipv4Cidr
from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.hookspecs import hookimpl
from polyvm.spec import VmSpec

from . import mapping as m


class AzureSettings(BackendSettings):
    """Pulumi config ``polyvm:azure``.

    ``location`` is required unless every VM spec sets ``region``. Without ``resource_group`` a new
    resource group is created per VM; without ``subnet_id`` a VNet and subnet are created per VM.
    """

    location: str | None = Field(default=None, description="Azure location, e.g. westeurope (spec.region wins).")
    resource_group: str | None = Field(default=None, description="Name of an existing resource group to use.")
    subnet_id: str | None = Field(default=None, description="Resource id of an existing subnet to attach to.")
    address_space: Ipv4Cidr = Field(default="10.10.0.0/16", description="VNet address space (new VNet only).")
    subnet_prefix: Ipv4Cidr = Field(default="10.10.1.0/24", description="Subnet prefix (new VNet only).")
    storage_account_type: str = Field(default="Premium_LRS", description="OS and data disk SKU.")

    @field_validator("location")
    @classmethod
    def _location(cls, v: str | None) -> str | None:
        if v is not None and not m._LOCATION_RE.match(v):
            raise ValueError(f"{v!r} is not an Azure location name (like westeurope, eastus2)")
        return v

    @field_validator("resource_group")
    @classmethod
    def _rg(cls, v: str | None) -> str | None:
        if v is not None and not __import__("re").match(r"^[-\w._()]{1,89}[-\w_()]$", v):
            raise ValueError(f"{v!r} is not a valid resource group name")
        return v

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("/subscriptions/") and "/subnets/" in v):
            raise ValueError("must be a subnet resource id: /subscriptions/…/virtualNetworks/…/subnets/…")
        return v

    @field_validator("storage_account_type")
    @classmethod
    def _sku(cls, v: str) -> str:
        allowed = ("Premium_LRS", "StandardSSD_LRS", "Standard_LRS", "Premium_ZRS", "StandardSSD_ZRS")
        if v not in allowed:
            raise ValueError(f"{v!r} is not one of {', '.join(allowed)}")
        return v


def _nic_outputs(name: str, inputs: dict) -> dict:
    configs = [dict(c, privateIPAddress="10.10.1.4") for c in inputs.get("ipConfigurations") or []]
    return {"ipConfigurations": configs}


class AzureBackend(Backend):
    name = "azure"
    description = "Azure VM with NSG, Standard static public IP and managed disks (pulumi-azure-native)"
    capabilities = Capabilities(
        firewall="cloud",
        egress="all IPv4 (explicit NSG rule)",
        max_data_disks=m.MAX_DATA_DISKS,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=True,
        os_families=frozenset({"ubuntu", "debian", "rhel"}),
        ipv6_ingress=False,
        load_balancer="Standard Load Balancer (layer 4)",
        lb_protocols=frozenset({"tcp"}),
        notes="IPv4-only network; zones are 1, 2, 3; data disks at /dev/disk/azure/scsi1/lun<N>; a private VM "
              "reaches out through default outbound access, enabled on the subnet polyvm creates.",
    )
    egress_rules = frozenset({("all", None, None, "0.0.0.0/0")})
    settings_model = AzureSettings
    sdk_modules = ("pulumi_azure_native", "pulumi_tls")
    extra = "azure"
    example_settings = {"location": "westeurope"}
    example_provider_config = {"azure-native:location": "westeurope"}
    mock_outputs = {
        "azure-native:network:PublicIPAddress": lambda name, inputs: {"ipAddress": "20.50.0.10"},
        "azure-native:network:NetworkInterface": _nic_outputs,
        "azure-native:resources:ResourceGroup": lambda name, inputs: {"name": inputs.get("resourceGroupName")
                                                                      or f"{name}-1a2b3c"},
        "azure-native:network:VirtualNetwork": lambda name, inputs: {"name": inputs.get("virtualNetworkName")
                                                                     or f"{name}-4d5e6f"},
    }

    limits = m.LIMITS
    data_disk_types = frozenset({"azure-native:compute:Disk"})
    # pulumi-azure-native replaces a resource when a property the Azure REST API marks create-only
    # (x-ms-mutability without "update") changes: github.com/Azure/azure-rest-api-specs, compute
    # (ComputeRP/DiskRP) and network specs, as summarised in the provider's resource docs.
    replacements = (
        Replacement("azure-native:resources:ResourceGroup", ("location", "resourceGroupName"), m.AZ_SPECS + " resources"),
        Replacement("azure-native:network:VirtualNetwork", ("location", "resourceGroupName", "virtualNetworkName"),
                    m.AZ_SPECS + " network virtualNetwork.json"),
        Replacement("azure-native:network:Subnet", ("resourceGroupName", "virtualNetworkName", "subnetName"),
                    m.AZ_SPECS + " network virtualNetwork.json"),
        Replacement("azure-native:network:NetworkSecurityGroup", ("location", "resourceGroupName", "networkSecurityGroupName"),
                    m.AZ_SPECS + " network networkSecurityGroup.json"),
        # The load balancer's public IP and load balancer: path parameters and location, plus what the Azure
        # API fixes at creation, verified in hashicorp/terraform-provider-azurerm (ForceNew there because
        # Azure refuses the change): internal/services/network/public_ip_resource.go (sku, sku_tier,
        # ip_version, zones, public_ip_prefix_id, ip_tags, edge_zone) and
        # internal/services/loadbalancer/lb_resource.go (sku, sku_tier, edge_zone; frontend zones by
        # CustomizeDiff). tests/backends/test_lb_replacements.py checks these.
        Replacement("azure-native:network:PublicIPAddress",
                    ("location", "resourceGroupName", "publicIpAddressName", "sku", "zones",
                     "publicIPAddressVersion", "publicIPPrefix", "ipTags", "extendedLocation"),
                    m.AZ_SPECS + " network publicIpAddress.json; hashicorp/terraform-provider-azurerm "
                    "internal/services/network/public_ip_resource.go (SKU, version, zones, prefix, IP tags and "
                    "edge zone are fixed at creation)"),
        Replacement("azure-native:network:LoadBalancer",
                    ("location", "resourceGroupName", "loadBalancerName", "sku", "extendedLocation",
                     "frontendIPConfigurations.zones"),
                    m.AZ_SPECS + " network loadBalancer.json; hashicorp/terraform-provider-azurerm "
                    "internal/services/loadbalancer/lb_resource.go (SKU, edge zone and frontend zones are fixed "
                    "at creation; rules, probes and pools update in place)"),
        Replacement("azure-native:network:NetworkInterface", ("location", "resourceGroupName", "networkInterfaceName"),
                    m.AZ_SPECS + " network networkInterface.json"),
        Replacement("azure-native:compute:Disk", ("location", "resourceGroupName", "diskName", "creationData", "zones"),
                    m.AZ_SPECS + " compute DiskRP disk.json (creationData is create-only)"),
        Replacement("azure-native:compute:VirtualMachine",
                    ("location", "resourceGroupName", "vmName", "zones", "osProfile.computerName",
                     "osProfile.adminUsername", "storageProfile.imageReference", "storageProfile.osDisk.createOption"),
                    m.AZ_SPECS + " compute ComputeRP virtualMachine.json (osProfile and image are set at creation; "
                    "customData through replace_on_changes)"),
    )

    def unsupported(self, spec: VmSpec) -> list[str]:
        return super().unsupported(spec) + m.unsupported(spec)

    def settings_problems(self, spec: VmSpec, settings: BackendSettings) -> list[str]:
        assert isinstance(settings, AzureSettings)
        return m.location_problems(spec, settings.location)

    def create(self, spec: VmSpec, settings: BackendSettings, opts: Any = None) -> Any:
        from .component import AzureVirtualMachine

        assert isinstance(settings, AzureSettings)
        return AzureVirtualMachine(spec, settings, opts)

    # --- fleets ----------------------------------------------------------------------------------------
    lb_module = "polyvm.backends.azure.lb"
    fleet_component = "polyvm.backends.azure.fleet:AzureFleet"
    lb_settings = (
        ("resource_group", "the members, their subnet and the load balancer share one resource group"),
        ("subnet_id", "the members' shared subnet: the backend pool holds their addresses in its virtual network"))

    def doc_tables(self) -> dict:
        return {
            "VM sizes (cheapest with at least the asked vCPUs, GiB and data disks)":
                (("VM size", "vCPUs", "GiB", "data disks"), list(m.VM_SIZES)),
            "images (marketplace, version latest)": (("family", "version", "publisher", "offer", "sku"),
                                                     [(f, v, *ref) for (f, v), ref in m.IMAGES.items()]),
            "NSG rules": (("priority", "rule"), [
                (f"{m.FIRST_PRIORITY} + {m.PRIORITY_STEP}·i", "allow ingress[i] (IPv4 sources)"),
                (m.ALLOW_ALL_OUTBOUND_PRIORITY, "allow all outbound IPv4"),
                (m.DENY_ALL_INBOUND_PRIORITY, "deny all other inbound (overrides Azure's AllowVnetInBound)"),
            ]),
        }

    # --- reading a plan back (contract suite) ---------------------------------------------------------
    def _nsg_rules(self, plan: Any) -> list[dict]:
        (nsg,) = plan.by_type("azure-native:network:NetworkSecurityGroup")
        return list(nsg.inputs.get("securityRules") or [])

    def planned_ingress(self, plan: Any) -> set:
        return m.firewall_rules(self._nsg_rules(plan), "Inbound")

    def planned_egress(self, plan: Any) -> set:
        return m.firewall_rules(self._nsg_rules(plan), "Outbound")

    def planned_disks(self, plan: Any) -> dict[str, int]:
        return {d.inputs["tags"]["polyvm-disk"]: int(d.inputs["diskSizeGB"])
                for d in plan.by_type("azure-native:compute:Disk")}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        (vm,) = plan.by_type("azure-native:compute:VirtualMachine")
        return dict(vm.inputs.get("tags") or {})


@hookimpl
def polyvm_register_backends(register):
    register(AzureBackend())
