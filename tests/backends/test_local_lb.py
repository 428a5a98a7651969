"""The local load balancer without root: address plan, refusals, the HAProxy config (checked by haproxy)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest

from polyvm.backends.local import loadbalancer as llb
from polyvm.backends.local.engine import NETWORK
from polyvm.fleet import parse_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"


def fleet(listeners=None, health=None, **kw):
    lb = {"allowed_cidrs": ["198.18.0.0/15"], "listeners": listeners or [{"protocol": "http", "port": 80,
                                                                          "target_port": 8080}]}
    if health is not None:
        lb["health_check"] = health
    return parse_fleet({"name": "web", "count": 3, "vm": {"size": "small", "image": {"family": "debian",
                        "version": "12"}, "ssh": {"public_key": KEY}}, "load_balancer": lb, **kw})


def test_address_plan_stays_in_the_benchmark_range_and_off_the_engines_links():
    bench = ipaddress.ip_network("198.18.0.0/15")
    seen = set()
    for i in (1, llb.MAX_INDEX):
        b = llb.block(i)
        assert b.subnet_of(bench) and not b.overlaps(NETWORK)
        addrs = list(llb.front_addresses(i))
        for j in range(llb.MAX_MEMBERS):
            addrs += llb.member_addresses(i, j)
        assert all(ipaddress.ip_address(a) in b for a in addrs)
        assert not seen & set(addrs) and len(set(addrs)) == len(addrs)
        seen |= set(addrs)
        # every link is its own /30: both ends in the same /30, different from every other link's
        nets = {ipaddress.ip_network(f"{a}/30", strict=False) for a in addrs}
        assert len(nets) == 1 + llb.MAX_MEMBERS
    with pytest.raises(ValueError):
        llb.block(0)
    with pytest.raises(ValueError):
        llb.member_addresses(1, llb.MAX_MEMBERS)


def test_sources_are_the_load_balancers_block():
    rec = llb.LbRecord(id="pvlb-5", index=5, fleet="web", state_dir="/tmp/x", address="198.18.197.2",
                       host_ip="198.18.197.1", veth="pvlb5")
    s = llb.LocalLoadBalancer(rec).sources
    assert s.traffic == s.health_checks == ("198.18.197.0/24",)


def test_refusals():
    out = "\n".join(llb.problems(fleet([{"protocol": "https", "port": 443, "certificate": "c"}],
                                       {"protocol": "https"}, zones=["a"], scaling={"min": 1, "max": 3})))
    assert "listeners[0].protocol https" in out and "health_check.protocol https" in out
    assert "zones (" in out and "scaling (" in out
    assert llb.problems(fleet()) == []


def record(members=3):
    rec = llb.LbRecord(id="pvlb-7", index=7, fleet="web", state_dir="/tmp/fleets-x", address="198.18.199.2",
                       host_ip="198.18.199.1", veth="pvlb7", ports=[80])
    for j in range(members):
        lb_ip, ip = llb.member_addresses(7, j)
        rec.members.append(llb.LbMember(name=f"web-{j}", host_id=f"pvm-{j + 1}", address=ip, lb_address=lb_ip,
                                        link=f"m{j}"))
    return rec


def test_config_carries_the_health_check_and_an_admin_socket():
    f = fleet(health={"protocol": "http", "path": "/healthz", "interval_s": 2, "timeout_s": 1,
                      "healthy_threshold": 3, "unhealthy_threshold": 4})
    cfg = llb.render_config(f, record())
    assert "stats socket /tmp/fleets-x/pvlb-7/admin.sock mode 600 level admin" in cfg
    assert "bind 198.18.199.2:80" in cfg and "mode http" in cfg
    assert "default-server inter 2s fall 4 rise 3" in cfg
    assert "timeout check 1s" in cfg
    assert "http-check send meth GET uri /healthz" in cfg
    for j in range(3):
        assert f"server web-{j} {llb.member_addresses(7, j)[1]}:8080 check port 8080" in cfg
    tcp = llb.render_config(fleet([{"port": 5432, "target_port": 5432}]), record(1))
    assert "mode tcp" in tcp and "httpchk" not in tcp


def test_record_round_trips_through_json():
    rec = record()
    again = llb.LbRecord.from_json(rec.to_json())
    assert again == rec and isinstance(again.members[0], llb.LbMember)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (scripts/setup installs it)")
def test_haproxy_accepts_the_rendered_config(tmp_path):
    rec = record()
    rec.state_dir = str(tmp_path)
    (tmp_path / rec.id).mkdir()
    for f in (fleet(health={"protocol": "http", "path": "/healthz"}),
              fleet([{"port": 80, "target_port": 8080}, {"port": 443, "target_port": 8443}])):
        path = tmp_path / "haproxy.cfg"
        path.write_text(llb.render_config(f, rec))
        proc = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + proc.stdout
    path.write_text(llb.render_config(fleet(), rec).replace("inter 10s", "inter tenseconds"))
    assert subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True).returncode != 0
