"""AWS backend: EC2 instance, security group, EBS volumes. The reference backend."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from pydantic import Field

if TYPE_CHECKING:  # the Pulumi SDK is imported when a VM is declared, not when the plugin loads
    import pulumi

from polyvm.backend import Backend, BackendSettings, Capabilities
from polyvm.hookspecs import hookimpl
from polyvm.spec import VmSpec


class AwsSettings(BackendSettings):
    """Pulumi config ``polyvm:aws``. Without vpc_id/subnet_id the account's default VPC is used."""

    vpc_id: str | None = Field(default=None, description="VPC for the security group (default VPC if unset).")
    subnet_id: str | None = Field(default=None, description="Subnet for the instance (a default subnet if unset).")


class AwsBackend(Backend):
    name = "aws"
    description = "Amazon EC2 instance, security group and EBS volumes (pulumi-aws)"
    capabilities = Capabilities(
        firewall="cloud",
        egress="all (explicit rule)",
        max_data_disks=11,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=True,
        notes="Images without cloud-init fall back to trust-on-first-use for the host key. IPv6 ingress gives "
              "the instance an IPv6 address and needs a subnet with an IPv6 CIDR (subnet_id). A VM without a "
              "public IP reaches the internet only through the subnet's NAT (choose subnet_id accordingly).",
    )
    settings_model = AwsSettings
    sdk_modules = ("pulumi_aws", "pulumi_tls")
    extra = "aws"
    mock_outputs = {
        "aws:ec2/instance:Instance": lambda name, inputs: {
            "publicIp": "203.0.113.10" if inputs.get("associatePublicIpAddress") else None,
            "privateIp": "172.31.0.10",
            "availabilityZone": inputs.get("availabilityZone") or "us-east-1a",
        },
        "aws:ebs/volume:Volume": lambda name, inputs: {
            "id": "vol-0" + hashlib.sha256(name.encode()).hexdigest()[:16]},
    }
    mock_calls = {
        "aws:ec2/getAmi:getAmi": lambda args: {"id": "ami-0123456789abcdef0", "name": args["filters"][0]["values"][0]},
    }

    def create(self, spec: VmSpec, settings: BackendSettings, opts: "pulumi.ResourceOptions | None" = None) -> Any:
        from .component import AwsVirtualMachine

        assert isinstance(settings, AwsSettings)
        return AwsVirtualMachine(spec, settings, opts)

    def doc_tables(self) -> dict:
        from . import mapping as m

        return {
            "instance types (cheapest with at least the asked vCPUs and GiB)":
                (("instance type", "vCPUs", "GiB"), list(m.INSTANCE_TYPES)),
            "images (most recent AMI matching)":
                (("family", "version", "owner", "name pattern"),
                 [(f, v, o, f"`{p}`") for (f, v), (o, p) in m.AMI_LOOKUP.items()]),
        }

    # --- reading a plan back (contract suite) ---------------------------------------------------------
    def _sg(self, plan: Any) -> dict[str, Any]:
        (sg,) = plan.by_type("aws:ec2/securityGroup:SecurityGroup")
        return sg.inputs

    def planned_ingress(self, plan: Any) -> set:
        from .mapping import firewall_rules

        return firewall_rules(self._sg(plan).get("ingress") or [])

    def planned_egress(self, plan: Any) -> set:
        from .mapping import firewall_rules

        return firewall_rules(self._sg(plan).get("egress") or [])

    def planned_disks(self, plan: Any) -> dict[str, int]:
        return {v.inputs["tags"]["polyvm-disk"]: int(v.inputs["size"]) for v in plan.by_type("aws:ebs/volume:Volume")}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        (vm,) = plan.by_type("aws:ec2/instance:Instance")
        return dict(vm.inputs.get("tags") or {})


@hookimpl
def polyvm_register_backends(register):
    register(AwsBackend())
