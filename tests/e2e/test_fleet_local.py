"""A fleet on this machine: 3 real hosts serving HTTP with nginx, HAProxy in front of them in its own
network namespace; a rolling configuration change under load drops no request; a stopped member is taken
out of rotation within the health check's bound. Everything is removed afterwards."""

from __future__ import annotations

import http.client
import os
import subprocess
import threading
import time
from collections import Counter

import pytest

from polyvm.backends.local import engine as local_engine
from polyvm.backends.local.loadbalancer import LocalLoadBalancer
from polyvm.errors import SandboxError
from polyvm.firewall import render_nftables
from polyvm.fleet import parse_fleet
from polyvm.provisioners import Connection, CopyFile, RunCommand, fanout
from polyvm.provisioners.rolling import rolling_update

pytestmark = pytest.mark.e2e

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT fleet-test"
CONF = "/etc/polyvm-fleet/nginx.conf"
PID = "/run/polyvm-fleet-nginx.pid"
MIN_REQUESTS = 1000


def nginx_conf(member: str, version: str) -> str:
    # A minimal nginx of its own (not Debian's site config): one port, a page naming the member and the
    # configuration version, and the health-check path.
    return f"""daemon on;
pid {PID};
error_log /tmp/polyvm-fleet-nginx.log;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    server {{
        listen 8080;
        location = /healthz {{ return 200 "ok\\n"; }}
        location / {{ return 200 "{member} {version}\\n"; }}
    }}
}}
"""


# Restart (not reload): the member is down for a few seconds, longer than HAProxy's retries (3, about a
# second apart, to the same server) can hide, so only draining it first keeps every request working.
RESTART = f"""set -e
nginx -t -q -c {CONF}
pid=$(cat {PID} 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -QUIT "$pid"
  i=0; while kill -0 "$pid" 2>/dev/null; do i=$((i+1)); [ $i -lt 200 ] || {{ echo "nginx did not stop" >&2; exit 1; }}; sleep 0.05; done
  sleep 4
fi
nginx -c {CONF}
"""


def fleet_spec():
    return parse_fleet({
        "name": "web", "count": 3,
        "vm": {"size": "small", "image": {"family": "debian", "version": "12"}, "ssh": {"public_key": KEY},
               "ingress": [{"port": 22, "cidrs": [str(local_engine.NETWORK)], "description": "ssh from here"}]},
        "load_balancer": {
            "allowed_cidrs": ["198.18.0.0/15"],
            "listeners": [{"protocol": "http", "port": 80, "target_port": 8080}],
            "health_check": {"protocol": "http", "path": "/healthz", "interval_s": 1, "timeout_s": 1,
                             "healthy_threshold": 2, "unhealthy_threshold": 2}},
    })


class Client(threading.Thread):
    """Sequential HTTP requests to the load balancer, a fresh connection and a timeout each."""

    def __init__(self, address: str, *, max_seconds: float = 300) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.max_seconds = max_seconds
        self.stop = threading.Event()
        self.ok: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        end = time.monotonic() + self.max_seconds
        while not self.stop.is_set() and time.monotonic() < end:
            self.ok.append(one_request(self.address, self.failures) or "")

    @property
    def total(self) -> int:
        return len(self.ok)


def one_request(address: str, failures: list[str]) -> str | None:
    conn = http.client.HTTPConnection(address, 80, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            failures.append(f"HTTP {resp.status}")
            return None
        return body.strip()
    except OSError as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        return None
    finally:
        conn.close()


def wait_for(what: str, predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} within {timeout:g}s")
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def haproxy_available():
    if local_engine.which("haproxy") is None or local_engine.which("nginx") is None:
        pytest.skip("haproxy and nginx are needed (scripts/setup installs them: apt-get install haproxy nginx)")


def test_rolling_change_behind_haproxy_drops_no_request(haproxy_available, testhosts, _local_engine):
    fleet = fleet_spec()
    lb = LocalLoadBalancer.create(_local_engine, fleet)
    hosts = []
    try:
        specs = fleet.member_specs(lb.sources)
        # Every member gets exactly the firewall its spec asks for: SSH from here, 8080 from the LB's block.
        rulesets = {render_nftables(s.ingress) for s in specs}
        assert len(rulesets) == 1
        hosts = testhosts.up(3, firewall=rulesets.pop())
        names = [s.name for s in specs]
        conns = {name: Connection(h.address, h.user, private_key_path=h.private_key_path, host_key=h.host_key,
                                  deadline=60, name=name) for name, h in zip(names, hosts)}

        def serve(version: str):
            return lambda conn: [CopyFile(nginx_conf(conn.name, version).encode(), CONF, mode=0o644),
                                 RunCommand(RESTART, name=f"nginx {version}")]

        fanout(list(conns.values()), serve("v1"), progress=False)
        lb.start([(name, h.record) for name, h in zip(names, hosts)])
        wait_for("all members healthy", lambda: all(lb.healthy(n) for n in names), 60)

        # The firewall is real: 8080 is closed to this machine (not the load balancer's block) ...
        c = http.client.HTTPConnection(hosts[0].address, 8080, timeout=2)
        with pytest.raises(OSError):
            c.request("GET", "/")
            c.getresponse()
        c.close()

        client = Client(lb.address)
        client.start()
        try:
            wait_for("the first responses", lambda: client.total >= 20, 60)
            events = []
            result = rolling_update(lb, list(conns.items()), serve("v2"), drain_timeout=30, healthy_timeout=60,
                                    on_event=lambda m, e: events.append((m, e, lb.status(m))))
            wait_for(f"{MIN_REQUESTS} requests", lambda: client.total >= MIN_REQUESTS, 240)
            # The last member is back in rotation when rolling_update returns, but no request may have
            # reached it yet (the client had made its 1000 long before): keep asking until each has answered.
            wait_for("an answer from every member's new configuration",
                     lambda: {f"{n} v2" for n in names} <= set(client.ok), 60)
        finally:
            client.stop.set()
            client.join(30)
        assert result.names == names
        assert [(m, e) for m, e, _ in events if e == "drained"] == [(n, "drained") for n in names]
        assert all(status == "DRAIN" for _, e, status in events if e == "drained")
        assert client.failures == [], f"{len(client.failures)} of {client.total} failed: {client.failures[:5]}"
        assert client.total >= MIN_REQUESTS
        seen = Counter(client.ok)
        print(f"{client.total} requests through the rolling change, 0 failed; per response: {dict(seen)}")
        assert {b.split()[0] for b in seen} == set(names), seen
        assert {f"{n} v2" for n in names} <= set(seen), seen  # the change reached every member

        # Stop one member's server: HAProxy takes it out within inter x fall + timeout (plus a generous
        # margin for a loaded machine), and requests keep succeeding on the others.
        hc = fleet.load_balancer.health_check
        bound = hc.detection_bound_s()
        testhosts.exec(hosts[1], f"nginx -c {CONF} -s stop")
        took = wait_for("HAProxy marking web-1 down", lambda: lb.status("web-1").startswith("DOWN"), bound + 30)
        print(f"web-1 marked down after {took:.1f}s (bound {bound}s + margin)")
        failures: list[str] = []
        after = [one_request(lb.address, failures) for _ in range(60)]
        assert failures == []
        assert {b.split()[0] for b in after} == {"web-0", "web-2"}
    finally:
        lb.down()
        testhosts.close()
    # Nothing is left: namespace (by inode), front veth (by ifindex), HAProxy, directory; the members'
    # hosts (their ends of the member links died with their namespaces).
    assert lb.leftovers() == []
    for h in hosts:
        assert local_engine.leftovers(h.record) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert lb.record.id not in netns
    assert not os.path.exists(f"/proc/{lb.record.pid}")


def test_load_balancer_admits_only_allowed_cidrs_and_is_found_again_after_a_restart(
        haproxy_available, testhosts, _local_engine):
    data = fleet_spec().model_dump()
    data["count"] = 1
    data["load_balancer"]["allowed_cidrs"] = ["203.0.113.0/24"]  # not this machine
    del data["vm"]["name"]
    fleet = parse_fleet(data)
    lb = LocalLoadBalancer.create(_local_engine, fleet)
    try:
        spec = fleet.member_specs(lb.sources)[0]
        host = testhosts.up(1, firewall=render_nftables(spec.ingress))[0]
        testhosts.exec(host, f"mkdir -p /etc/polyvm-fleet && cat > {CONF} && nginx -c {CONF}",
                       input=nginx_conf("web-0", "v1"))
        lb.start([("web-0", host.record)])
        wait_for("web-0 healthy", lambda: lb.healthy("web-0"), 60)  # health checks do get through
        failures: list[str] = []
        assert one_request(lb.address, failures) is None
        assert failures and ("timed out" in failures[0] or "Timeout" in failures[0]), failures
        # A new process finds the load balancer from its record and removes it.
        found = [x for x in LocalLoadBalancer.list(_local_engine) if x.record.id == lb.record.id]
        assert len(found) == 1 and found[0].record.members[0].name == "web-0"
        assert LocalLoadBalancer.down_all(_local_engine, fleet="web") == [lb.record.id]
        assert found[0].leftovers() == []
    finally:
        lb.down()
    assert lb.leftovers() == []


def test_a_failed_start_leaves_nothing_behind(haproxy_available, testhosts, _local_engine):
    data = fleet_spec().model_dump()
    del data["vm"]["name"]
    data["count"] = 2
    fleet = parse_fleet(data)
    lb = LocalLoadBalancer.create(_local_engine, fleet)
    good, gone = testhosts.up(2)
    # Its namespace is gone: linking it to the load balancer must fail, also when another run has taken
    # the freed name for a host of its own at once (it did, in a run next to a 200-host benchmark).
    testhosts.down(gone)
    impostor = gone.record.id  # the freed name, taken here as another run would (unless one just did)
    taken = subprocess.run(["ip", "netns", "add", impostor], capture_output=True).returncode == 0
    try:
        with pytest.raises(SandboxError) as exc:
            lb.start([("web-0", good.record), ("web-1", gone.record)], timeout=20)
        assert f"host {gone.record.id} is not running" in str(exc.value), exc.value
        assert lb.leftovers() == []
        if taken:
            links = subprocess.run(["ip", "-n", impostor, "-o", "link", "show"], capture_output=True,
                                   text=True).stdout.splitlines()
            assert len(links) == 1 and ": lo:" in links[0], links  # no link into it
    finally:
        lb.down()  # when start did not fail as it should
        if taken:
            subprocess.run(["ip", "netns", "del", impostor], check=False)
    # the good member's end of its link went with the load balancer's namespace
    links = testhosts.exec(good, "ip -o link show").stdout
    assert f"lb{lb.record.index}" not in links


def test_pulumi_provider_puts_haproxy_in_front_of_existing_member_hosts(haproxy_available, testhosts, _local_engine):
    """The Pulumi path (polyvm:local:Fleet): members are declared first and admit any local load balancer's
    block; the LoadBalancer resource's provider links HAProxy to their hosts, answers read, and delete
    leaves nothing."""
    from polyvm.backends.local.loadbalancer import range_sources
    from polyvm.backends.local.provider import LocalLoadBalancerProvider

    fleet = fleet_spec()
    specs = fleet.member_specs(range_sources())
    hosts = testhosts.up(3, firewall=render_nftables(specs[0].ingress))
    names = [s.name for s in specs]
    for name, h in zip(names, hosts):
        testhosts.exec(h, f"mkdir -p /etc/polyvm-fleet && cat > {CONF} && nginx -c {CONF}",
                       input=nginx_conf(name, "v1"))
    provider = LocalLoadBalancerProvider(str(_local_engine.state_dir))
    props = {"fleet": fleet.to_data(),
             "members": [{"name": n, "host_id": h.record.id} for n, h in zip(names, hosts)]}
    created = provider.create(props)
    lb = next(x for x in LocalLoadBalancer.list(_local_engine) if x.record.id == created.id)
    try:
        assert created.outs["address"] == lb.address
        wait_for("all members healthy", lambda: all(lb.healthy(n) for n in names), 60)
        failures: list[str] = []
        seen = {(one_request(lb.address, failures) or "").split(" ")[0] for _ in range(30)}
        assert failures == [] and seen == set(names), (seen, failures)
        assert provider.read(created.id, created.outs).id == created.id
        assert provider.diff(created.id, created.outs, {**props, "members": props["members"][:2]}).replaces
    finally:
        provider.delete(created.id, created.outs)
    assert lb.leftovers() == []
    assert provider.read(created.id, created.outs).id == ""  # gone: Pulumi drops it from its state
