"""vSphere refuses a fleet's load balancer clearly, and says why."""

from __future__ import annotations

import inspect

import pytest

from polyvm.backends.vsphere import lb as vsphere_lb
from polyvm.fleet import parse_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"
VM = {"size": "small", "image": {"family": "debian", "version": "12"}, "ssh": {"public_key": KEY}}


def test_load_balancer_refused_with_the_reason_fleet_without_one_allowed():
    with_lb = parse_fleet({"name": "web", "count": 2, "vm": VM, "load_balancer": {
        "allowed_cidrs": ["10.0.0.0/8"], "listeners": [{"port": 80}]}})
    out = vsphere_lb.problems(with_lb)
    assert len(out) == 1 and out[0].startswith("load_balancer (vSphere has no native load balancer")
    assert vsphere_lb.problems(parse_fleet({"name": "web", "count": 2, "vm": VM})) == []


def test_the_vsphere_provider_really_has_no_load_balancer_resource():
    vsphere = pytest.importorskip("pulumi_vsphere")
    names = [n for n, obj in inspect.getmembers(vsphere, inspect.isclass) if "balanc" in n.lower()]
    assert names == []
