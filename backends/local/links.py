"""A private network between local hosts: a bridge in its own network namespace, one veth per host.

Local hosts each have a /30 link to this machine only; host-to-host traffic would need forwarding in this
machine's namespace, which polyvm never enables. A :class:`HostNetwork` gives a group of hosts (a primary
and its standbys, say) a shared segment instead, with nothing changed in this machine's namespace:

* a network namespace ``pvln-<pid>-<n>`` holds a bridge ``br0``;
* each host gets a veth ``lan0`` (inside its namespace) whose peer is a bridge port, and the address
  ``198.18.64.<10 + k>/24`` (k: its position in the group). The block is private to the bridge: another
  group reuses it on its own bridge, and no host is in two groups.

Removing the namespace (:meth:`HostNetwork.down`) destroys the bridge ports and with them the hosts' ends;
a host that goes down takes its own end with it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Sequence

from polyvm.errors import SandboxError

from .engine import Host, _run

BLOCK = "198.18.64"
FIRST = 10
MAX_HOSTS = 200
_counter = itertools.count(1)


@dataclass
class HostNetwork:
    """One bridge and the addresses of the hosts on it (host id -> address)."""

    netns: str
    addresses: dict[str, str] = field(default_factory=dict)

    @classmethod
    def up(cls, hosts: Sequence[Host], *, interface: str = "lan0") -> "HostNetwork":
        if not 2 <= len(hosts) <= MAX_HOSTS:
            raise SandboxError(f"a host network joins 2..{MAX_HOSTS} hosts, not {len(hosts)}")
        while True:
            ns = f"pvln-{os.getpid()}-{next(_counter)}"
            proc = _run(["ip", "netns", "add", ns], check=False)
            if proc.returncode == 0:
                break
            if not os.path.exists(f"/run/netns/{ns}"):
                raise SandboxError(f"ip netns add {ns} failed: {proc.stderr.strip()}")
        net = cls(ns)
        try:
            _run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", ns, "link", "set", "br0", "up"])
            for k, h in enumerate(hosts):
                port, addr = f"p{k}", f"{BLOCK}.{FIRST + k}"
                _run(["ip", "-n", ns, "link", "add", port, "type", "veth", "peer", "name", interface,
                      "netns", h.id])
                _run(["ip", "-n", ns, "link", "set", port, "master", "br0", "up"])
                _run(["ip", "-n", h.id, "addr", "add", f"{addr}/24", "dev", interface])
                _run(["ip", "-n", h.id, "link", "set", interface, "up"])
                net.addresses[h.id] = addr
        except BaseException:
            net.down()
            raise
        return net

    def down(self) -> None:
        """Remove the bridge's namespace (and with it every host's end). Idempotent."""
        if os.path.exists(f"/run/netns/{self.netns}"):
            _run(["ip", "netns", "del", self.netns], check=False)
