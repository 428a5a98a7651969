"""The load balancers' replacement rules against the provider schemas they come from.

Per resource type a fleet's load balancer declares: the inputs the provider schema marks ForceNew
(Terraform SDKv2 ``ForceNew: true``; Pulumi's bridged providers replace on them), read from the fetched
provider source named in SCHEMA[type]["source"], must all be in the backend's replacement table; every
input the mapping records must be classified (forcing, or named in ``in_place`` as updated in place); and
an entry of the table that the schema does not mark ForceNew must say why it is there (``conservative``).
"""

from __future__ import annotations

import pytest
import test_contract as tc  # noqa: F401  (the same contract settings the built-in backends are tested with)
import test_digitalocean_contract as tdo

from polyvm.backends.aws import AwsBackend
from polyvm.backends.azure import AzureBackend
from polyvm.backends.digitalocean import DigitalOceanBackend
from polyvm.backends.gcp import GcpBackend

AWS = "hashicorp/terraform-provider-aws internal/service/elbv2"
GCP = "hashicorp/terraform-provider-google google/services/compute"
DO = "digitalocean/terraform-provider-digitalocean digitalocean"
AZ = "hashicorp/terraform-provider-azurerm internal/services"
#: Provider v6 (bridged by pulumi-aws 7) gives most resources `region`: "Changing the value of `region` will
#: force resource replacement." (website/docs/guides/enhanced-region-support.html.markdown)
AWS_REGION = {"region"}

#: type -> schema facts, in Pulumi input names. force_new: ForceNew in the schema; conservative: listed by
#: polyvm though the schema does not say ForceNew (why); in_place: inputs polyvm sets that update in place.
SCHEMA: dict[str, dict[str, dict]] = {
    "aws": {
        "aws:lb/loadBalancer:LoadBalancer": {
            "source": f"{AWS}/load_balancer.go",
            "force_new": {"name", "namePrefix", "internal", "loadBalancerType", "customerOwnedIpv4Pool"} | AWS_REGION,
            "conservative": {"subnets": "customizeDiffLoadBalancerNLB: ForceNew for a Network Load Balancer "
                                        "unless subnets are only added"},
            "in_place": {"ipAddressType", "tags", "enableCrossZoneLoadBalancing", "securityGroups"},
        },
        "aws:lb/targetGroup:TargetGroup": {
            "source": f"{AWS}/target_group.go",
            "force_new": {"name", "namePrefix", "port", "protocol", "protocolVersion", "targetType", "vpcId",
                          "ipAddressType"} | AWS_REGION,
            "conservative": {},
            "in_place": {"healthCheck", "deregistrationDelay", "tags"},
        },
        "aws:lb/listener:Listener": {
            "source": f"{AWS}/listener.go",
            "force_new": {"loadBalancerArn"} | AWS_REGION,
            "conservative": {},
            "in_place": {"port", "protocol", "defaultActions", "tags", "certificateArn", "sslPolicy"},
        },
        "aws:lb/targetGroupAttachment:TargetGroupAttachment": {
            "source": f"{AWS}/target_group_attachment.go",
            "force_new": {"targetGroupArn", "targetId", "port", "availabilityZone"} | AWS_REGION,
            "conservative": {},
            "in_place": set(),
        },
    },
    "gcp": {
        "gcp:compute/address:Address": {
            "source": f"{GCP}/resource_compute_address.go",
            "force_new": {"name", "address", "addressType", "description", "ipCollection", "ipVersion",
                          "ipv6EndpointType", "network", "networkTier", "prefixLength", "purpose", "region",
                          "subnetwork", "project"},
            "conservative": {},
            "in_place": {"labels"},
        },
        "gcp:compute/regionHealthCheck:RegionHealthCheck": {
            "source": f"{GCP}/resource_compute_region_health_check.go",
            "force_new": {"name", "region", "project"},
            "conservative": {},
            "in_place": {"checkIntervalSec", "timeoutSec", "healthyThreshold", "unhealthyThreshold",
                         "tcpHealthCheck", "httpHealthCheck", "httpsHealthCheck", "description"},
        },
        "gcp:compute/instanceGroup:InstanceGroup": {
            "source": f"{GCP}/resource_compute_instance_group.go",
            "force_new": {"name", "zone", "description", "network", "project"},
            "conservative": {},
            "in_place": {"instances", "namedPorts"},
        },
        "gcp:compute/regionBackendService:RegionBackendService": {
            "source": f"{GCP}/resource_compute_region_backend_service.go",
            "force_new": {"name", "loadBalancingScheme", "network", "params", "project"},
            "conservative": {"region": "not ForceNew in the schema (Optional+Computed), but the region is part "
                                       "of the resource's URL: an update cannot move it"},
            "in_place": {"protocol", "healthChecks", "backends", "connectionDrainingTimeoutSec", "description"},
        },
        "gcp:compute/forwardingRule:ForwardingRule": {
            "source": f"{GCP}/resource_compute_forwarding_rule.go",
            "force_new": {"name", "ipAddress", "ipProtocol", "allPorts", "backendService", "description",
                          "ipCollection", "ipVersion", "isMirroringCollector", "loadBalancingScheme", "network",
                          "networkTier", "noAutomateDnsZone", "portRange", "ports", "region",
                          "serviceDirectoryRegistrations", "serviceLabel", "sourceIpRanges", "subnetwork",
                          "project"},
            "conservative": {},
            "in_place": {"labels"},
        },
    },
    "digitalocean": {
        "digitalocean:index/loadBalancer:LoadBalancer": {
            "source": f"{DO}/loadbalancer/resource_loadbalancer.go",
            "force_new": {"region", "vpcUuid", "subnetUuid", "ip", "type", "network", "networkStack"},
            "conservative": {},
            "in_place": {"name", "dropletTag", "dropletIds", "forwardingRules", "healthcheck",
                         "redirectHttpToHttps", "firewall", "stickySessions", "size", "sizeUnit",
                         "enableProxyProtocol", "enableBackendKeepalive", "httpIdleTimeoutSeconds",
                         "disableLetsEncryptDnsRecords", "projectId", "algorithm"},
        },
        "digitalocean:index/firewall:Firewall": {
            "source": f"{DO}/firewall/resource_firewall.go (no ForceNew)",
            "force_new": set(),
            "conservative": {},
            "in_place": {"name", "tags", "dropletIds", "inboundRules", "outboundRules"},
        },
    },
    # azure-native is not a bridged Terraform provider: it replaces on the REST API's path parameters and
    # location, and on create-only properties. The create-only ones here are those azurerm marks ForceNew
    # because the Azure API fixes them at creation (its schema is where they were verified).
    "azure": {
        "azure-native:network:PublicIPAddress": {
            "source": f"{AZ}/network/public_ip_resource.go (sku, sku_tier, ip_version, zones, "
                      "public_ip_prefix_id, ip_tags, edge_zone ForceNew)",
            "force_new": {"location", "resourceGroupName", "publicIpAddressName", "sku", "zones",
                          "publicIPAddressVersion", "publicIPPrefix", "ipTags", "extendedLocation"},
            "conservative": {},
            "in_place": {"publicIPAllocationMethod", "tags"},
        },
        "azure-native:network:LoadBalancer": {
            "source": f"{AZ}/loadbalancer/lb_resource.go (sku, sku_tier, edge_zone ForceNew; "
                      "frontend_ip_configuration.N.zones by CustomizeDiff)",
            "force_new": {"location", "resourceGroupName", "loadBalancerName", "sku", "extendedLocation",
                          "frontendIPConfigurations.zones"},
            "conservative": {},
            "in_place": {"frontendIPConfigurations", "backendAddressPools", "probes", "loadBalancingRules",
                         "tags"},
        },
    },
}

CONTRACTS = {"aws": tc.TestAwsContract, "azure": tc.TestAzureContract, "gcp": tc.TestGcpContract,
             "digitalocean": tdo.TestDigitalOceanContract}
BACKENDS = {"aws": AwsBackend, "azure": AzureBackend, "gcp": GcpBackend, "digitalocean": DigitalOceanBackend}
CASES = [(cloud, typ) for cloud, types in SCHEMA.items() for typ in types]


@pytest.fixture(scope="module")
def lb_plans():
    cache: dict[str, object] = {}

    def get(cloud: str):
        if cloud not in cache:
            cache[cloud] = CONTRACTS[cloud]().contract_fleet_plan(load_balancer=True)[1]
        return cache[cloud]
    return get


@pytest.mark.parametrize("cloud,typ", CASES)
def test_every_forcenew_input_of_the_schema_is_declared(cloud, typ):
    facts = SCHEMA[cloud][typ]
    declared = set(BACKENDS[cloud]().replacement_inputs(typ) or ())
    missing = sorted(facts["force_new"] - declared)
    assert not missing, f"{typ}: ForceNew in {facts['source']} but not in the replacement table: {missing}"


@pytest.mark.parametrize("cloud,typ", CASES)
def test_every_declared_input_is_forcenew_or_says_why(cloud, typ):
    facts = SCHEMA[cloud][typ]
    declared = set(BACKENDS[cloud]().replacement_inputs(typ) or ())
    extra = sorted(declared - facts["force_new"] - set(facts["conservative"]))
    assert not extra, f"{typ}: {extra} replace in polyvm's table but are not ForceNew in {facts['source']}"


@pytest.mark.parametrize("cloud,typ", CASES)
def test_every_input_the_mapping_sets_is_classified(cloud, typ, lb_plans):
    facts = SCHEMA[cloud][typ]
    plan = lb_plans(cloud)
    resources = [r for r in plan.resources if r.type == typ]
    assert resources, f"the {cloud} fleet plan declares no {typ}"
    declared = {p.split(".")[0] for p in BACKENDS[cloud]().replacement_inputs(typ) or ()}
    known = declared | facts["in_place"]
    for res in resources:
        unknown = sorted(k for k in res.inputs if not k.startswith("__") and k not in known)
        assert not unknown, (f"{typ} {res.name}: inputs {unknown} are neither in the replacement table nor "
                             f"known to update in place; look them up in {facts['source']}")
