"""Every built-in backend passes the contract suite (polyvm.testing) under Pulumi mocks."""

from polyvm.backends.aws import AwsBackend
from polyvm.backends.azure import AzureBackend
from polyvm.backends.gcp import GcpBackend
from polyvm.testing import BackendContract


class TestAwsContract(BackendContract):
    backend = AwsBackend()
    region = "eu-west-1"
    zone = "eu-west-1a"
    fleet_settings = {"vpc_id": "vpc-0123456789abcdef0", "vpc_cidr": "10.0.0.0/16",
                      "subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]}


class TestAzureContract(BackendContract):
    backend = AzureBackend()
    settings = {"location": "westeurope"}
    fleet_settings = {"location": "westeurope", "resource_group": "web-rg",
                      "subnet_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/web-rg/"
                                   "providers/Microsoft.Network/virtualNetworks/web-vnet/subnets/members"}
    region = "northeurope"
    zone = "2"
    instance_type_override = "Standard_D4s_v5"
    image_id_override = "Canonical:ubuntu-24_04-lts:server:24.04.202401010"
    extra_unsupported = (
        ({"ssh": {"user": "admin", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwHd0ks5e0m5gUj4k2Gx0m4c1QzYlqZ6j2l4vbm5y2B"}},
         "ssh.user 'admin'"),
        ({"zone": "westeurope-1"}, "zone 'westeurope-1'"),
        ({"tags": {"team/owner": "data"}}, "Azure tag names cannot contain '/'"),
    )


class TestGcpContract(BackendContract):
    backend = GcpBackend()
    settings = {"project": "polyvm-contract", "zone": "europe-west1-b"}
    fleet_settings = {"project": "polyvm-contract", "zone": "europe-west1-b",
                      "network": "projects/polyvm-contract/global/networks/web",
                      "subnetwork": "projects/polyvm-contract/regions/europe-west1/subnetworks/web"}
    region = "europe-west4"
    zone = "europe-west4-a"
    instance_type_override = "n2-standard-4"
    image_id_override = "projects/my-project/global/images/my-ubuntu"
    extra_unsupported = (
        ({"tags": {"Owner": "Data Team"}}, "tags.Owner"),
        ({"zone": "2"}, "zone '2'"),
    )


# --- the contract catches broken backends (so a passing run means something) ----------------------------
import dataclasses  # noqa: E402

import pytest  # noqa: E402

import polyvm.backends.aws.component as aws_component  # noqa: E402
import polyvm.backends.aws.mapping as aws_mapping  # noqa: E402
from polyvm.errors import UnsupportedFeatureError  # noqa: E402


def contract_for(be):
    """A fresh contract instance (own plan cache) for ``be``."""
    return type("Contract", (BackendContract,), {"backend": be})()


def test_contract_catches_an_extra_open_port(monkeypatch):
    real = aws_mapping.security_group_args

    def leaky(spec, vpc_id):
        args = real(spec, vpc_id)
        args["ingress"].append({"protocol": "tcp", "from_port": 8080, "to_port": 8080, "cidr_blocks": ["0.0.0.0/0"]})
        return args

    monkeypatch.setattr(aws_mapping, "security_group_args", leaky)
    with pytest.raises(AssertionError, match="extra"):
        contract_for(AwsBackend()).test_ingress_is_exactly_the_spec()


def test_contract_catches_a_world_open_database(monkeypatch):
    real = aws_mapping.security_group_args

    def leaky(spec, vpc_id):
        args = real(spec, vpc_id)
        args["ingress"].append({"protocol": "tcp", "from_port": 5432, "to_port": 5432, "cidr_blocks": ["0.0.0.0/0"]})
        return args

    monkeypatch.setattr(aws_mapping, "security_group_args", leaky)
    with pytest.raises(AssertionError, match="port 5432 is open to the world"):
        contract_for(AwsBackend()).test_no_world_open_ssh_or_database_by_default()


def test_contract_catches_dropped_tags(monkeypatch):
    real = aws_mapping.instance_args
    monkeypatch.setattr(aws_mapping, "instance_args", lambda spec, **kw: {**real(spec, **kw), "tags": {}})
    with pytest.raises(AssertionError, match="tags not applied"):
        contract_for(AwsBackend()).test_tags_applied()


def test_contract_catches_user_data_in_clear(monkeypatch):
    from polyvm.cloudinit import render_user_data

    monkeypatch.setattr(aws_component, "user_data_output", lambda spec, key: render_user_data(
        spec, "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n", "ssh-ed25519 AAAA"))
    with pytest.raises(AssertionError, match="in clear"):
        contract_for(AwsBackend()).test_no_private_key_or_user_data_in_clear()


def test_contract_catches_an_orphan_resource():
    class OrphanAws(AwsBackend):
        def create(self, spec, settings, opts=None):
            import pulumi_tls as tls

            tls.PrivateKey(f"{spec.name}-orphan", algorithm="ED25519")  # not parented to the component
            return super().create(spec, settings, opts)

    with pytest.raises(AssertionError, match="not a descendant of the component"):
        contract_for(OrphanAws()).test_exactly_one_component_and_everything_under_it()


def test_contract_catches_a_silently_ignored_limit():
    class LaxAws(AwsBackend):
        capabilities = dataclasses.replace(AwsBackend.capabilities, max_data_disks=1, zones=False)

        def unsupported(self, spec):
            return []  # claims limits but never enforces them

    with pytest.raises(AssertionError, match="too many data disks: the spec was accepted"):
        contract_for(LaxAws()).test_unsupported_options_are_rejected()


def test_contract_catches_declaring_before_rejecting():
    class LateAws(AwsBackend):
        def create(self, spec, settings, opts=None):
            import pulumi_tls as tls

            tls.PrivateKey(f"{spec.name}-early", algorithm="ED25519")
            if spec.zone:
                raise UnsupportedFeatureError(self.name, [f"zone {spec.zone!r}"])
            return super().create(spec, settings, opts)

    contract = type("Contract", (BackendContract,), {"backend": LateAws(),
                                                     "extra_unsupported": (({"zone": "x-1a"}, "zone 'x-1a'"),)})()
    with pytest.raises(AssertionError, match="resources were declared before the spec was rejected"):
        contract.test_unsupported_options_are_rejected()


def test_contract_catches_a_wrong_disk_size(monkeypatch):
    real = aws_mapping.volume_args
    monkeypatch.setattr(aws_mapping, "volume_args", lambda spec: [{**a, "size": a["size"] + 1} for a in real(spec)])
    with pytest.raises(AssertionError, match="planned data disks"):
        contract_for(AwsBackend()).test_data_disks()


def test_contract_catches_a_missing_planned_reader():
    from polyvm.backend import Backend

    class NoReaders(AwsBackend):
        planned_ingress = Backend.planned_ingress  # the base: NotImplementedError naming the backend

    with pytest.raises(NotImplementedError, match="backend 'aws' does not implement planned_ingress"):
        contract_for(NoReaders()).test_ingress_is_exactly_the_spec()


def test_plugin_fixtures(polyvm_plan, polyvm_public_key):
    data = {"name": "fx", "size": "small", "image": {"family": "ubuntu", "version": "24.04"},
            "ssh": {"public_key": polyvm_public_key}}
    p = polyvm_plan(AwsBackend(), data)
    assert [r.name for r in p.by_type("polyvm:aws:VirtualMachine")] == ["fx"]
    assert p.outputs["fx"]["ssh_user"] == "polyvm"


# --- the data-safety checks catch broken backends too ----------------------------------------------------
def test_contract_catches_an_unprotected_data_disk(monkeypatch):
    from polyvm.component import VirtualMachine

    real = VirtualMachine.child

    def careless(self, name, *, data=False, **kwargs):
        return real(self, name, **kwargs)  # drops protect / retain_on_delete

    monkeypatch.setattr(VirtualMachine, "child", careless)
    with pytest.raises(AssertionError, match="not protected and retained on delete"):
        contract_for(AwsBackend()).test_data_disks_are_protected()


def test_contract_catches_a_backend_that_declares_no_data_disk_holder():
    class Blind(AwsBackend):
        data_disk_types = frozenset()

    with pytest.raises(AssertionError, match="no resource of the plan is declared to hold the data disks"):
        contract_for(Blind()).test_data_disks_are_protected()


def test_contract_catches_a_data_disk_replaced_by_an_everyday_change():
    from polyvm.backend import Replacement

    class TagsReplaceVolumes(AwsBackend):
        replacements = tuple(r if r.type != "aws:ebs/volume:Volume" else Replacement(r.type, (*r.inputs, "tags"), r.source)
                             for r in AwsBackend.replacements)

    with pytest.raises(AssertionError, match="tags: REPLACE aws:ebs/volume:Volume"):
        contract_for(TagsReplaceVolumes()).test_everyday_changes_never_lose_a_data_disk()


def test_contract_catches_a_missing_replacement_rule():
    class Undeclared(AwsBackend):
        replacements = tuple(r for r in AwsBackend.replacements if r.type != "aws:ebs/volume:Volume")

    with pytest.raises(AssertionError, match=r"no replacement rule .*'aws:ebs/volume:Volume'"):
        contract_for(Undeclared()).test_limits_and_replacements_are_declared_with_sources()


# --- the fleet part of the contract catches broken fleets ---------------------------------------------------
def aws_fleet_contract():
    return type("Contract", (BackendContract,), {"backend": AwsBackend(), "fleet_settings": TestAwsContract.fleet_settings})()


def test_contract_catches_a_fleet_opening_an_extra_member_port(monkeypatch):
    import polyvm.backends.aws.fleet as aws_fleet
    from polyvm.spec import VmSpec

    def leaky(self, index, spec):
        data = spec.model_dump()
        data["ingress"].append({"protocol": "tcp", "port": 8080, "cidrs": ["10.0.0.0/8"]})
        return VmSpec.model_validate(data)

    monkeypatch.setattr(aws_fleet.AwsFleet, "member_spec", leaky)
    with pytest.raises(AssertionError, match="extra"):
        aws_fleet_contract().test_fleet_with_load_balancer_plans_or_is_refused_clearly()


def test_contract_catches_load_balancer_sources_open_to_the_world(monkeypatch):
    import polyvm.backends.aws.lb as aws_lb
    from polyvm.fleet import LbSources

    monkeypatch.setattr(aws_lb, "sources", lambda fleet, vpc_cidr: LbSources(traffic=("0.0.0.0/0",),
                                                                             health_checks=(vpc_cidr,)))
    with pytest.raises(AssertionError, match="to the world"):
        aws_fleet_contract().test_fleet_with_load_balancer_plans_or_is_refused_clearly()


def test_contract_catches_members_renamed_by_position(monkeypatch):
    from polyvm.fleet import FleetSpec

    # Names that depend on the count: every member is renamed when the fleet grows.
    monkeypatch.setattr(FleetSpec, "member_names", property(lambda self: [f"{self.name}-{self.count}x{i}"
                                                                          for i in range(self.count)]))
    with pytest.raises(AssertionError, match="adding a member changes the others"):
        aws_fleet_contract().test_fleet_member_names_are_stable()


def test_contract_catches_unprotected_member_disks(monkeypatch):
    from polyvm.component import VirtualMachine

    real = VirtualMachine.child

    def careless(self, name, *, data=False, **kwargs):
        return real(self, name, data=False, **kwargs)

    monkeypatch.setattr(VirtualMachine, "child", careless)
    with pytest.raises(AssertionError, match="not protected"):
        aws_fleet_contract().test_fleet_member_data_disks_are_protected()
