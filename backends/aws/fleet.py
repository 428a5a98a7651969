"""The AWS Fleet component: members (AwsVirtualMachine children, round robin over the subnets, one per
Availability Zone) behind a Network or Application Load Balancer. Thin Pulumi calls over lb.py."""

from __future__ import annotations

from typing import Any


import pulumi_aws as aws

from polyvm.backend import BackendSettings
from polyvm.fleet_component import Fleet
from polyvm.spec import VmSpec

from . import AwsSettings
from . import lb as lbm


class AwsFleet(Fleet):
    settings: AwsSettings

    def member_settings(self, index: int, spec: VmSpec) -> BackendSettings:
        subnets = lbm.member_subnets(self.fleet, self.settings.subnet_ids)
        if not subnets:
            return self.settings
        return self.settings.model_copy(update={"subnet_id": subnets[spec.name]})

    def declare_load_balancer(self) -> tuple[list[Any], Any]:
        fleet, st = self.fleet, self.settings
        assert st.vpc_id and st.vpc_cidr and st.subnet_ids  # fleet_settings_problems refused it otherwise
        region = {"region": fleet.vm.region} if fleet.vm.region else {}
        security_groups: list[Any] = []
        sg_args = lbm.security_group_args(fleet, st.vpc_id, st.vpc_cidr)
        if sg_args is not None:
            sg = aws.ec2.SecurityGroup(f"{fleet.name}-lb-sg", **sg_args, **region, opts=self.child_opts())
            security_groups.append(sg.id)
        balancer = aws.lb.LoadBalancer(f"{fleet.name}-lb", **lbm.load_balancer_args(fleet, st.subnet_ids, security_groups),
                                       **region, opts=self.child_opts())
        groups = {port: aws.lb.TargetGroup(f"{fleet.name}-tg-{port}", **lbm.target_group_args(fleet, port, st.vpc_id),
                                           **region, opts=self.child_opts())
                  for port in fleet.load_balancer.target_ports}  # type: ignore[union-attr]
        arns = {port: tg.arn for port, tg in groups.items()}
        for ln, args in zip(fleet.load_balancer.listeners, lbm.listener_args(fleet, balancer.arn, arns)):  # type: ignore[union-attr]
            aws.lb.Listener(f"{fleet.name}-listener-{ln.port}", **args, **region,
                            opts=self.child_opts(depends_on=[groups[ln.member_port]]))
        ids = {name: vm.instance.id for name, vm in self.vms.items()}
        pairs = [(name, port) for name in fleet.member_names for port in sorted(arns)]
        for (name, port), args in zip(pairs, lbm.attachment_args(fleet, ids, arns)):
            aws.lb.TargetGroupAttachment(f"{name}-tg-{port}", **args, **region, opts=self.child_opts())
        # An AWS load balancer's addresses change; its DNS name is what clients use.
        return [], balancer.dns_name


