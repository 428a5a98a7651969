"""Plain unit tests of the pure mapping: fast, no Pulumi."""

from polyvm.spec import parse_spec
from polyvm.testing import contract_public_key, sample_spec_data
from polyvm_fakecloud import FakeCloudBackend
from polyvm_fakecloud import mapping as m


def test_ingress_rules_one_per_cidr():
    spec = parse_spec(sample_spec_data(FakeCloudBackend.capabilities, "full"))
    rules = m.ingress_rules(spec)
    assert ("tcp", 22, 22, "203.0.113.0/24") in rules
    assert ("tcp", 8000, 8100, "10.0.0.0/8") in rules
    assert m.parse_rules(m.firewall_keepers(spec)["ingress"]) == set(rules)


def test_tags_round_trip_through_keepers():
    spec = parse_spec({"name": "a", "size": "small", "image": {"family": "debian", "version": "12"},
                       "ssh": {"public_key": contract_public_key()}, "tags": {"env": "x"}})
    assert m.parse_tags(m.instance_keepers(spec)) == spec.all_tags()


def test_address():
    assert m.address("198.51.100.0/24", 42) == "198.51.100.42"
