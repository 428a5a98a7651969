"""The local backend's replacement table names only real inputs of its two dynamic resources, and exactly
the ones their providers' diffs replace on (the table is what ``polyvm plan --against`` reads)."""

from __future__ import annotations

import copy

import pytest

from polyvm.backends.local import HOST_TYPE, LB_TYPE, LocalBackend
from polyvm.backends.local.provider import LocalHostProvider, LocalLoadBalancerProvider
from polyvm.testing import BackendContract

STATE_DIR = "/tmp/polyvm-test-hosts/replacements-unused"  # only recorded, never used: nothing is started


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, list):
        return [*value, "extra"] if not value or not isinstance(value[0], dict) else value[:-1] or [{}]
    if isinstance(value, dict):
        return {**value, "changed": True}
    raise AssertionError(f"no way to change {value!r}")


@pytest.fixture(scope="module")
def recorded():
    contract = type("C", (BackendContract,), {"backend": LocalBackend(), "settings": {"state_dir": STATE_DIR},
                                              "fleet_settings": {"state_dir": STATE_DIR}})()
    _spec, plan = contract.contract_plan("full")
    _fleet, fleet_plan = contract.contract_fleet_plan(load_balancer=True)
    (host,) = [r for r in plan.resources if r.type == HOST_TYPE]
    (lb,) = [r for r in fleet_plan.resources if r.type == LB_TYPE]
    strip = lambda inputs: {k: v for k, v in inputs.items() if not k.startswith("__")}  # noqa: E731
    return {HOST_TYPE: (strip(host.inputs), LocalHostProvider(STATE_DIR)),
            LB_TYPE: (strip(lb.inputs), LocalLoadBalancerProvider(STATE_DIR))}


@pytest.mark.parametrize("typ", [HOST_TYPE, LB_TYPE])
def test_every_key_of_the_table_is_a_real_input(typ, recorded):
    inputs, _provider = recorded[typ]
    table = LocalBackend().replacement_inputs(typ)
    assert table, f"no replacement rule for {typ}"
    stale = sorted(set(table) - set(inputs))
    assert not stale, f"{typ}: the replacement table names {stale}, which are not inputs of the resource ({sorted(inputs)})"


@pytest.mark.parametrize("typ", [HOST_TYPE, LB_TYPE])
def test_the_table_is_exactly_what_the_provider_replaces_on(typ, recorded):
    inputs, provider = recorded[typ]
    replacing = set()
    for key in inputs:
        news = copy.deepcopy(inputs)
        news[key] = _changed(inputs[key])
        result = provider.diff("pv-1", inputs, news)
        assert result.changes, f"{typ}: a change of {key} is not seen by the provider's diff"
        if result.replaces:
            assert result.replaces == [key], (key, result.replaces)
            replacing.add(key)
    assert set(LocalBackend().replacement_inputs(typ)) == replacing, (
        f"{typ}: the table says {sorted(LocalBackend().replacement_inputs(typ))}, the provider replaces on "
        f"{sorted(replacing)}")
