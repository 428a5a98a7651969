"""Size limits checked against the clouds' documentation (sources in the comments of core/spec.py and
the backends' mapping modules)."""

from __future__ import annotations

import pytest

from polyvm.backends.aws import mapping as aws_mapping
from polyvm.errors import SpecError
from polyvm.spec import VmSpec, parse_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwHd0ks5e0m5gUj4k2Gx0m4c1QzYlqZ6j2l4vbm5y2B"


def spec(**kw) -> VmSpec:
    data = {"name": "limits", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "24.04"},
            "ssh": {"user": "ops", "public_key": KEY}, **kw}
    return parse_spec(data)


def test_core_takes_as_many_data_disks_as_gcp_does():
    s = spec(data_disks=[{"name": f"d{i}", "size_gb": 10} for i in range(127)])
    assert len(s.data_disks) == 127
    with pytest.raises(SpecError, match="128 data disks; at most 127"):
        spec(data_disks=[{"name": f"d{i}", "size_gb": 10} for i in range(128)])


def test_aws_tag_keys_are_at_most_127_characters():
    # EC2 API Reference, Tag: "Tag keys ... accept a maximum of 127 Unicode characters".
    s = spec()
    at_limit = s.model_copy(update={"tags": {"k" * 127: "v"}})
    over = s.model_copy(update={"tags": {"k" * 128: "v"}})  # past core's own check, as a third-party spec might be
    assert aws_mapping._tags(at_limit) == []
    assert aws_mapping._tags(over) and "127" in aws_mapping._tags(over)[0]
