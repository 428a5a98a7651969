"""vSphere backend: a VM cloned from a template, cloud-init through guestinfo (pulumi-vsphere 4.x).

vSphere has no firewall resource: ingress is enforced in the guest (nftables, applied over SSH by the
provisioning layer), and :meth:`VsphereBackend.planned_ingress` returns the rules that will be applied.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from typing import Any

from pydantic import Field, field_validator, model_validator

from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.hookspecs import hookimpl
from polyvm.spec import SUPPORTED_IMAGES, VmSpec

from . import mapping as m


class VsphereSettings(BackendSettings):
    """Pulumi config ``polyvm:vsphere``: where the VM goes and what it is cloned from (names, not ids).

    Exactly one of ``cluster`` (its root resource pool is used) and ``resource_pool`` (a path such as
    ``cluster1/Resources/db``) is required. ``template`` is a VM template with open-vm-tools and cloud-init
    (>= 21.3, VMware datasource); ``image.image_id.vsphere`` in a spec picks another template for that VM.
    """

    datacenter: str = Field(min_length=1, description="Datacenter name.")
    datastore: str = Field(min_length=1, description="Datastore for the VM's disks.")
    network: str = Field(min_length=1, description="Port group (network) name for the VM's one NIC.")
    template: str = Field(min_length=1, description="Template VM to clone (open-vm-tools + cloud-init >= 21.3); "
                                                    "image.image_id.vsphere overrides it per VM.")
    cluster: str | None = Field(default=None, description="Compute cluster; its root resource pool is used.")
    resource_pool: str | None = Field(default=None, description="Resource pool path, instead of cluster.")
    folder: str | None = Field(default=None, description="VM folder, relative to the datacenter.")
    customize: bool = Field(default=False, description=(
        "Guest customization on clone (hostname, DHCP on the NIC). Off by default: cloud-init's VMware "
        "datasource does both, and customization together with cloud-init is a known conflict (the "
        "customization engine and cloud-init both configure the network and hostname on first boot)."))
    domain: str = Field(default="local", description="Domain for guest customization.")
    dns_servers: list[str] = Field(default_factory=list, description="DNS servers for guest customization.")
    linked_clone: bool = Field(default=False, description="Linked clone (needs a template snapshot; the root "
                                                          "disk then keeps the template's size).")
    reclone: bool = Field(default=False, description=(
        "Any change under clone (the template's id, customization) forces a new VM, and the data disks live "
        "inside it: changes to clone are ignored once the VM exists. true applies them, re-creating the VM "
        "and its data disks (polyvm plan --against reports it as DATA LOSS); upgrade the OS in place, or "
        "move the data to a new VM, instead."))

    @field_validator("dns_servers")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        for s in v:
            try:
                ipaddress.ip_address(s)
            except ValueError:
                raise ValueError(f"{s!r} is not an IP address") from None
        return v

    @model_validator(mode="after")
    def _placement(self) -> "VsphereSettings":
        if bool(self.cluster) == bool(self.resource_pool):
            raise ValueError("set exactly one of cluster (use its root resource pool) and resource_pool "
                             f"(got {'both' if self.cluster else 'neither'})")
        return self


def _uuid(name: str) -> str:
    return str(uuid.UUID(hashlib.sha256(name.encode()).hexdigest()[:32]))


def _mock_vm(name: str, inputs: dict) -> dict:
    # The cloud adds each disk's UUID; the mock derives one per label (vSphere's start with 6000C29).
    disks = [dict(d, uuid="6000C29" + _uuid(f"{name}/{d.get('label')}")[7:]) for d in inputs.get("disks", [])]
    return {"id": _uuid(name), "uuid": _uuid(name), "defaultIpAddress": "192.0.2.50",
            "guestIpAddresses": ["192.0.2.50"], "disks": disks, "moid": "vm-1001"}


def _mock_template(a: dict, template_id: str = "4217a5c4-1f4e-4a2f-9bde-6b1d2c3e4f50") -> dict:
    # The mock template's disk is 8 GiB, the smallest root_disk_gb a spec may ask, so offline plans
    # never trip the "cannot shrink" check (which needs the real template's size).
    return {"id": template_id, "uuid": template_id, "name": a["name"], "guestId": "ubuntu64Guest",
            "scsiType": "pvscsi", "firmware": "efi", "networkInterfaceTypes": ["vmxnet3"],
            "disks": [{"label": "disk0", "size": 8, "thinProvisioned": True, "eagerlyScrub": False, "unitNumber": 0}]}


class VsphereBackend(Backend):
    name = "vsphere"
    description = "vSphere VM cloned from a template, cloud-init via guestinfo (pulumi-vsphere)"
    capabilities = Capabilities(
        firewall="guest",
        egress="all (guest policy accept)",
        max_data_disks=m.MAX_DATA_DISKS,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=True,
        os_families=frozenset(SUPPORTED_IMAGES),
        instance_type_override=False,
        regions=False,
        zones=False,
        load_balancer="none (refused: no native one; HAProxy on a VM of its own, docs/fleets.md)",
        notes=("One address from the port group: reported as public_ip (when public_ip: true) and "
               "private_ip; whether it is reachable from the internet is up to your network. Ingress is "
               "enforced by nftables in the guest. The template must be of the spec's OS family. "
               "Tags are written to the VM's Notes as key=value lines (no vCenter tag objects)."),
    )
    settings_model = VsphereSettings
    sdk_modules = ("pulumi_vsphere", "pulumi_tls")
    extra = "vsphere"
    example_settings = {"datacenter": "dc1", "datastore": "datastore1", "cluster": "cluster1",
                        "network": "VM Network", "template": "ubuntu-2404-cloudinit"}
    mock_outputs = {"vsphere:index/virtualMachine:VirtualMachine": _mock_vm}
    data_disk_types = frozenset({"vsphere:index/virtualMachine:VirtualMachine"})
    # A template re-published under the same name: the lookup answers with a new id.
    newer_image_calls = {"vsphere:index/getVirtualMachine:getVirtualMachine": lambda a: _mock_template(
        a, "4217a5c4-0000-4a2f-9bde-6b1d2c3e4f51")}
    replacements = (
        Replacement("vsphere:index/virtualMachine:VirtualMachine", ("clone", "replaceTrigger"),
                    f"{m.TF_VSPHERE}/resource_vsphere_virtual_machine.go (every changed key under clone.0 is "
                    "ForceNew), virtual_machine_config_structure.go (replace_trigger ForceNew); disks, CPU, memory "
                    "and extra_config change in place"),
    )
    mock_calls = {
        "vsphere:index/getDatacenter:getDatacenter": lambda a: {"id": "datacenter-3", "name": a.get("name")},
        "vsphere:index/getDatastore:getDatastore": lambda a: {"id": "datastore-14", "name": a["name"]},
        "vsphere:index/getComputeCluster:getComputeCluster": lambda a: {
            "id": "domain-c8", "name": a["name"], "resourcePoolId": "resgroup-9"},
        "vsphere:index/getResourcePool:getResourcePool": lambda a: {"id": "resgroup-42", "name": a.get("name")},
        "vsphere:index/getNetwork:getNetwork": lambda a: {"id": "network-15", "name": a["name"], "type": "Network"},
        "vsphere:index/getVirtualMachine:getVirtualMachine": lambda a: _mock_template(a),
    }

    def holds_data(self, typ: str, inputs: Any) -> bool:
        """The VM holds its data disks (they are devices of the VM): it is data when it has any."""
        prefix = m.disk_label("")
        return typ in self.data_disk_types and any(
            str(d.get("label", "")).startswith(prefix) for d in (inputs.get("disks") or []) if isinstance(d, dict))

    def unsupported(self, spec: VmSpec) -> list[str]:
        out = super().unsupported(spec)
        # Tags are key=value lines in the VM's Notes: a line break would split one tag into two.
        out += [f"tags.{k} (a value with a line break cannot be one key=value line in the VM's Notes)"
                for k, v in spec.tags.items() if "\n" in v or "\r" in v]
        return out

    # --- fleets ----------------------------------------------------------------------------------------
    lb_module = "polyvm.backends.vsphere.lb"

    def doc_tables(self) -> dict:
        return {
            "disks and guest data": (("what", "how"), [
                ("root disk", "SCSI 0:0, the template's disk grown to root_disk_gb (never shrunk)"),
                ("data disks", "SCSI 0:1-6 then 0:8-15 in spec order: the provider's unit_number 1-14 (a logical "
                               "index: bus = n/15, unit = n%15, shifted past the controller's unit 7)"),
                ("data disk device", f"`{m.GUEST_DEVICE_PATH.format(uuid='<disk uuid, no dashes, lower case>')}` "
                                     "(enable_disk_uuid)"),
                ("cloud-init", "`guestinfo.metadata` + `guestinfo.userdata` (base64, secret) in extra_config; the "
                               "metadata's `redact: [userdata]` has cloud-init blank the user data once read; "
                               "later user data changes are ignored (cloud-init runs it once per instance)"),
                ("template changes", "ignored once the VM exists (ignore_changes on clone): a new template would "
                                     "re-create the VM and the data disks inside it; see `reclone`"),
                ("ingress rules", "enforced by nftables in the guest; published as `guestinfo.polyvm.ingress`"),
                ("tags", "`key=value` lines in the VM's Notes (annotation)"),
            ]),
        }

    # --- reading a plan back (contract suite) ---------------------------------------------------------
    def _vm(self, plan: Any) -> Any:
        (vm,) = plan.by_type("vsphere:index/virtualMachine:VirtualMachine")
        return vm

    def planned_ingress(self, plan: Any) -> set:
        """The rules the provisioning layer applies in the guest with nftables (published on the VM as
        guestinfo.polyvm.ingress): exactly the spec's."""
        from polyvm.plan import is_secret

        extra = self._vm(plan).inputs["extraConfig"]
        # The map holds the secret user data, so Pulumi records all of it as a secret: unwrap.
        if is_secret(extra):
            extra = extra["value"]
        return m.firewall_rules(extra["guestinfo.polyvm.ingress"])

    def planned_egress(self, plan: Any) -> set:
        """The guest firewall's output policy is accept: always the documented egress_rules."""
        self._vm(plan)
        return set(self.egress_rules)

    def planned_disks(self, plan: Any) -> dict[str, int]:
        prefix = m.disk_label("")
        return {d["label"][len(prefix):]: int(d["size"]) for d in self._vm(plan).inputs.get("disks") or []
                if d["label"].startswith(prefix)}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        return m.parse_annotation_tags(self._vm(plan).inputs.get("annotation", ""))

    def create(self, spec: VmSpec, settings: BackendSettings, opts: Any = None) -> Any:
        from .component import VsphereVirtualMachine

        assert isinstance(settings, VsphereSettings)
        return VsphereVirtualMachine(spec, settings, opts)


@hookimpl
def polyvm_register_backends(register):
    register(VsphereBackend())
