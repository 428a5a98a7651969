"""AWS backend: EC2 instance, security group, EBS volumes. The reference backend."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

if TYPE_CHECKING:  # the Pulumi SDK is imported when a VM is declared, not when the plugin loads
    import pulumi

from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.fleet import FleetSpec, LbSources
from polyvm.hookspecs import hookimpl
from polyvm.spec import Ipv4Cidr, VmSpec

from . import lb as lbm
from . import mapping as m

TF_ELBV2 = "hashicorp/terraform-provider-aws internal/service/elbv2"


class AwsSettings(BackendSettings):
    """Pulumi config ``polyvm:aws``. Without vpc_id/subnet_id the account's default VPC is used."""

    vpc_id: str | None = Field(default=None, description="VPC for the security group (default VPC if unset).")
    subnet_id: str | None = Field(default=None, description="Subnet for the instance (a default subnet if unset).")
    subnet_ids: list[str] = Field(default_factory=list, description=(
        "Fleets: subnets (one per Availability Zone) of vpc_id the members are spread over, round robin, "
        "and the load balancer spans."))
    vpc_cidr: Ipv4Cidr | None = Field(default=None, description=(
        "Fleets with a load balancer: vpc_id's IPv4 CIDR, where health checks (and ALB traffic) come from."))
    upgrade_image: bool = Field(default=False, description=(
        "The AMI is pinned once chosen (ignore_changes on ami): true lets the next `pulumi up` move to the "
        "newest matching AMI, which replaces the instance (data volumes are detached with the instance "
        "stopped and reattached)."))

    @model_validator(mode="after")
    def _vpc_needs_subnet(self) -> "AwsSettings":
        # The security group goes in vpc_id but the instance in subnet_id's VPC (the default VPC without
        # one); EC2 refuses a security group of another VPC (InvalidParameter at RunInstances).
        if self.vpc_id and not (self.subnet_id or self.subnet_ids):
            raise ValueError("vpc_id needs subnet_id (a subnet of that VPC): without it the instance "
                             "lands in the default VPC and cannot use the security group")
        return self


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
        load_balancer="Network LB (tcp) or Application LB (http/https)",
        lb_protocols=frozenset({"tcp", "http", "https"}),
        notes="Images without cloud-init fall back to trust-on-first-use for the host key. IPv6 ingress gives "
              "the instance an IPv6 address and needs a subnet with an IPv6 CIDR (subnet_id). A VM without a "
              "public IP reaches the internet only through the subnet's NAT (choose subnet_id accordingly). The "
              "AMI and the availability zone are chosen once and pinned (ignore_changes): a newer AMI is used "
              "only with upgrade_image: true, which replaces the instance; EBS volumes stay, detached with the "
              "instance stopped (stop_instance_before_detaching). A new login key replaces the key pair and so "
              "the instance (key_name forces a new instance); the volumes stay. vpc_id needs subnet_id.",
    )
    settings_model = AwsSettings
    sdk_modules = ("pulumi_aws", "pulumi_tls")
    extra = "aws"
    example_provider_config = {"aws:region": "eu-west-1"}
    mock_outputs = {
        "aws:ec2/instance:Instance": lambda name, inputs: {
            "publicIp": "203.0.113.10" if inputs.get("associatePublicIpAddress") else None,
            "privateIp": "172.31.0.10",
            "availabilityZone": inputs.get("availabilityZone") or "us-east-1a",
        },
        "aws:ebs/volume:Volume": lambda name, inputs: {
            "id": "vol-0" + hashlib.sha256(name.encode()).hexdigest()[:16]},
        "aws:lb/loadBalancer:LoadBalancer": lambda name, inputs: {
            "arn": f"arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/{inputs.get('name')}/0123",
            "dnsName": f"{inputs.get('name')}-0123456789.elb.us-east-1.amazonaws.com"},
        "aws:lb/targetGroup:TargetGroup": lambda name, inputs: {
            "arn": f"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{inputs.get('name')}/0123"},
    }
    mock_calls = {
        "aws:ec2/getAmi:getAmi": lambda args: {"id": "ami-0123456789abcdef0", "name": args["filters"][0]["values"][0]},
        "aws:index/getAvailabilityZones:getAvailabilityZones": lambda args: {
            "id": "us-east-1", "names": ["us-east-1a", "us-east-1b"], "zoneIds": ["use1-az1", "use1-az2"]},
        "aws:ec2/getSubnet:getSubnet": lambda args: {"id": args.get("id"), "availabilityZone": "us-east-1a"},
    }
    newer_image_calls = {
        "aws:ec2/getAmi:getAmi": lambda args: {"id": "ami-0fedcba9876543210", "name": args["filters"][0]["values"][0]},
    }
    data_disk_types = frozenset({"aws:ebs/volume:Volume"})
    limits = m.LIMITS
    replacements = (
        Replacement("aws:ec2/instance:Instance",
                    ("ami", "availabilityZone", "subnetId", "keyName", "associatePublicIpAddress", "privateIp",
                     "userData", "rootBlockDevice.encrypted", "rootBlockDevice.kmsKeyId"),
                    f"{m.TF_AWS}/ec2_instance.go (ForceNew; userData by ForceNewIf user_data_replace_on_change)"),
        Replacement("aws:ec2/keyPair:KeyPair", ("publicKey", "keyName", "keyNamePrefix"), f"{m.TF_AWS}/ec2_key_pair.go"),
        Replacement("aws:ec2/securityGroup:SecurityGroup", ("name", "namePrefix", "description", "vpcId"),
                    f"{m.TF_AWS}/vpc_security_group.go"),
        Replacement("aws:ebs/volume:Volume", ("availabilityZone", "encrypted", "kmsKeyId", "snapshotId", "outpostArn"),
                    f"{m.TF_AWS}/ebs_volume.go"),
        Replacement("aws:ec2/volumeAttachment:VolumeAttachment", ("deviceName", "instanceId", "volumeId"),
                    f"{m.TF_AWS}/ebs_volume_attachment.go"),
        # Load balancer rules: ForceNew in the schemas of hashicorp/terraform-provider-aws
        # internal/service/elbv2/{load_balancer,target_group,listener,target_group_attachment}.go, and
        # `region` on every one: "Changing the value of `region` will force resource replacement"
        # (website/docs/guides/enhanced-region-support.html.markdown, provider v6, which pulumi-aws 7
        # bridges). tests/backends/test_lb_replacements.py holds the schema facts and checks this table.
        Replacement("aws:lb/loadBalancer:LoadBalancer",
                    ("name", "namePrefix", "internal", "loadBalancerType", "customerOwnedIpv4Pool", "region",
                     "subnets"),
                    f"{TF_ELBV2}/load_balancer.go (ForceNew: name, name_prefix, internal, load_balancer_type, "
                    "customer_owned_ipv4_pool; subnets by customizeDiffLoadBalancerNLB for a Network Load "
                    "Balancer unless subnets are only added, listed for every type since the table cannot say "
                    "when; an ALB's subnets, security_groups, ip_address_type and attributes update in place)"),
        Replacement("aws:lb/targetGroup:TargetGroup", ("name", "namePrefix", "port", "protocol", "protocolVersion",
                                                       "targetType", "vpcId", "ipAddressType", "region"),
                    f"{TF_ELBV2}/target_group.go (ForceNew; health_check, deregistration_delay and tags update "
                    "in place)"),
        Replacement("aws:lb/listener:Listener", ("loadBalancerArn", "region"),
                    f"{TF_ELBV2}/listener.go (ForceNew: load_balancer_arn only; port, protocol, certificate, "
                    "ssl_policy and default_action update in place)"),
        Replacement("aws:lb/targetGroupAttachment:TargetGroupAttachment",
                    ("targetGroupArn", "targetId", "port", "availabilityZone", "region"),
                    f"{TF_ELBV2}/target_group_attachment.go (every argument ForceNew; no Update)"),
    )

    def create(self, spec: VmSpec, settings: BackendSettings, opts: "pulumi.ResourceOptions | None" = None) -> Any:
        from .component import AwsVirtualMachine

        assert isinstance(settings, AwsSettings)
        return AwsVirtualMachine(spec, settings, opts)

    # --- fleets ----------------------------------------------------------------------------------------
    lb_module = "polyvm.backends.aws.lb"
    fleet_component = "polyvm.backends.aws.fleet:AwsFleet"
    lb_settings = (("vpc_id", "the VPC the load balancer and its target groups go in"),
                   ("vpc_cidr", "the VPC's IPv4 CIDR: members admit health checks from it"),
                   ("subnet_ids", "one subnet per Availability Zone the load balancer spans"))

    def fleet_problems(self, fleet: FleetSpec) -> list[str]:
        out = super().fleet_problems(fleet)
        if fleet.zones:
            out.append("zones (AWS members are spread over polyvm:aws.subnet_ids, one subnet per Availability "
                       "Zone; remove zones)")
        return out

    def fleet_settings_problems(self, fleet: FleetSpec, settings: BackendSettings) -> list[str]:
        assert isinstance(settings, AwsSettings)
        out = super().fleet_settings_problems(fleet, settings)
        if fleet.load_balancer is not None and settings.subnet_ids:
            alone = lbm.problems(fleet)
            out += [f"polyvm:aws.subnet_ids: {p}" for p in lbm.problems(fleet, settings.subnet_ids) if p not in alone]
        return out

    def fleet_sources(self, fleet: FleetSpec, settings: BackendSettings) -> LbSources | None:
        assert isinstance(settings, AwsSettings)
        if fleet.load_balancer is None or not settings.vpc_cidr:
            return None
        return lbm.sources(fleet, settings.vpc_cidr)

    def doc_tables(self) -> dict:
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
