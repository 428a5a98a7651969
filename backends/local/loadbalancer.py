"""The local backend's load balancer: HAProxy in its own network namespace, health-checking a fleet's hosts.

Layout (nothing in this machine's own network namespace changes except one veth inside 198.18.0.0/15;
no sysctl, no route, no forwarding anywhere: HAProxy is a proxy, every hop is on a directly connected
/30):

* a network namespace ``pvlb-<i>`` owns the block ``198.18.<192+i>.0/24`` (the shared testhost script
  uses 198.18.N.0/24 for small N; the engine's hosts use 198.19.0.0/16);
* the front link ``pvlb<i>`` (this machine, ``.1``) <-> ``eth0`` (the load balancer, ``.2``): clients
  connect to ``.2``; an nftables ruleset in the namespace admits the listener ports from the fleet's
  ``allowed_cidrs`` only;
* one link per member ``m<j>`` (load balancer, ``.4(j+1)+1``) <-> ``lb<i>`` (inside the member's
  namespace, ``.4(j+1)+2``). HAProxy reaches member j at that address, so its health checks and traffic
  come from the block; the members' own nftables admit the block on the target and health-check ports
  because their VmSpecs say so (:meth:`polyvm.fleet.FleetSpec.member_specs` with :attr:`sources`).

HAProxy's runtime API socket (admin level, mode 0600) lives in the load balancer's directory
``<state_dir>/pvlb-<i>/``, next to ``lb.json``, the rendered ``haproxy.cfg`` and HAProxy's log; it is how
:meth:`drain`, :meth:`enable`, :meth:`healthy` and :meth:`connections` (the
:class:`polyvm.provisioners.rolling.LoadBalancer` protocol) work.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from polyvm.errors import SandboxError
from polyvm.firewall import render_nftables
from polyvm.fleet import FleetSpec, LbSources
from polyvm.spec import IngressRule

from .engine import Engine, Host, ifindex, interrupts_deferred, pids_in_netns, run, which

NETNS_PREFIX = "pvlb-"
#: Load balancer i owns 198.18.<BLOCK_BASE + i>.0/24.
BLOCK_BASE = 192
MAX_INDEX = 255 - BLOCK_BASE
#: Member j uses the /30 at 4*(j+1) of the block; .0/30 is the front link.
MAX_MEMBERS = 256 // 4 - 1
INSTALL_HINT = "apt-get install -y haproxy"
_TEMPLATES = Path(__file__).parent / "templates"
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


#: Every local load balancer's block (198.18.193.0/24 ... 198.18.255.0/24) lies in this range: what members
#: declared before their load balancer exists (Pulumi) admit.
ALL_BLOCKS = f"198.18.{BLOCK_BASE}.0/18"


def range_sources() -> LbSources:
    """Sources for members whose load balancer is made after them (under Pulumi): any local load balancer's
    block. Only this machine's own load balancers have addresses there."""
    return LbSources(traffic=(ALL_BLOCKS,), health_checks=(ALL_BLOCKS,), description="local load balancers")


def block(index: int) -> ipaddress.IPv4Network:
    if not 1 <= index <= MAX_INDEX:
        raise ValueError(f"load balancer index must be 1..{MAX_INDEX}")
    return ipaddress.IPv4Network(f"198.18.{BLOCK_BASE + index}.0/24")


def front_addresses(index: int) -> tuple[str, str]:
    """(this machine's address, the load balancer's address) on the front link."""
    net = block(index).network_address
    return str(net + 1), str(net + 2)


def member_addresses(index: int, j: int) -> tuple[str, str]:
    """(load balancer side, member side) of member j's link."""
    if not 0 <= j < MAX_MEMBERS:
        raise ValueError(f"member index must be 0..{MAX_MEMBERS - 1}")
    base = block(index).network_address + 4 * (j + 1)
    return str(base + 1), str(base + 2)


def problems(fleet: FleetSpec) -> list[str]:
    """What of ``fleet`` the local load balancer cannot honour, as 'path (why)' strings."""
    out = []
    lb = fleet.load_balancer
    if fleet.count > MAX_MEMBERS:
        out.append(f"count {fleet.count} (at most {MAX_MEMBERS} members: one /30 each in a /24)")
    if fleet.scaling is not None:
        out.append("scaling (local hosts do not autoscale; use count)")
    if fleet.zones:
        out.append("zones (local hosts have no zones)")
    if lb is not None:
        out += lb.protocol_problems({"tcp", "http"}, "no certificates locally; use http")
        if lb.health_check.protocol == "https":
            out.append("load_balancer.health_check.protocol https (use http or tcp)")
        if any(ipaddress.ip_network(c).version == 6 for c in lb.allowed_cidrs):
            out.append("load_balancer.allowed_cidrs IPv6 (the local load balancer has an IPv4 address only)")
    return out


def _ns_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# HAProxy processes started by this process, so their exit status is collected (no zombies).
_STARTED: dict[int, subprocess.Popen] = {}


@dataclass
class LbMember:
    name: str        # fleet member name (HAProxy server name), e.g. web-0
    host_id: str     # the engine host (its netns), e.g. pvm-7
    address: str     # the member's address on its link to the load balancer
    lb_address: str  # the load balancer's address on that link
    link: str        # the link's interface inside the load balancer's namespace


@dataclass
class LbRecord:
    """One load balancer as recorded in ``<state_dir>/pvlb-<i>/lb.json``."""

    id: str
    index: int
    fleet: str
    state_dir: str
    address: str                  # where clients connect
    host_ip: str                  # this machine's end of the front link
    veth: str                     # this machine's front veth
    veth_ifindex: int | None = None
    netns_inode: list[int] | None = None
    boot_id: str = ""
    pid: int | None = None        # HAProxy
    ports: list[int] = field(default_factory=list)
    members: list[LbMember] = field(default_factory=list)
    status: str = "creating"      # creating | up

    @property
    def dir(self) -> Path:
        return Path(self.state_dir) / self.id

    @property
    def socket_path(self) -> Path:
        return self.dir / "admin.sock"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LbRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in names})
        rec.members = [m if isinstance(m, LbMember) else LbMember(**m) for m in rec.members]
        return rec


@contextlib.contextmanager
def _netns_of(host: Host):
    """A path to ``host``'s own network namespace, held open while it is used. Not its name: another run
    takes a freed name at once (and a freed namespace's inode number too), so the namespace is taken from
    the host's running PID 1 inside: a member that is gone is an error, never another host's namespace."""
    fd: int | None = None
    with contextlib.suppress(OSError, TypeError):
        if host.status == "up" and host.init_pid and host.boot_id == _boot_id():
            fd = os.open(f"/proc/{int(host.init_pid)}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd) if fd is not None else None
        if st is None or [st.st_dev, st.st_ino] != list(host.netns_inode or []):
            raise SandboxError(f"host {host.id} is not running (its processes and network namespace are gone)")
        yield f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        if fd is not None:
            os.close(fd)


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


class LocalLoadBalancer:
    """HAProxy for one fleet, in its own network namespace. Create it before the members (their firewall
    needs :attr:`sources`), then :meth:`start` it with the members' hosts; :meth:`down` removes all."""

    def __init__(self, record: LbRecord, fleet: FleetSpec | None = None) -> None:
        self.record = record
        self._fleet = fleet

    # --- lifecycle -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, engine: Engine, fleet: FleetSpec) -> "LocalLoadBalancer":
        """Allocate the namespace and front link, and firewall the listeners to ``allowed_cidrs``."""
        if fleet.load_balancer is None:
            raise SandboxError(f"fleet {fleet.name} has no load_balancer")
        bad = problems(fleet)
        if bad:
            raise SandboxError("the local load balancer cannot honour " + "; ".join(bad))
        missing = [t for t in ("haproxy", "ip", "nft") if which(t) is None]
        if missing:
            raise SandboxError(f"the local load balancer needs {', '.join(missing)}: as root, run: "
                               f"{INSTALL_HINT} iproute2 nftables")
        if os.geteuid() != 0:
            raise SandboxError("the local load balancer must run as root (network namespaces)")
        state = Path(engine.state_dir)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        self: LocalLoadBalancer | None = None
        try:
            # Until the record names the namespace, a Ctrl-C would leave it behind (as in Engine.up).
            with interrupts_deferred():
                index = cls._allocate(state)
                ns = f"{NETNS_PREFIX}{index}"
                host_ip, address = front_addresses(index)
                d = state / ns
                inode = _ns_inode(f"/run/netns/{ns}")
                try:
                    shutil.rmtree(d, ignore_errors=True)
                    d.mkdir(mode=0o700)
                except BaseException:
                    run(["ip", "netns", "del", ns], check=False)  # nothing else exists yet
                    raise
                rec = LbRecord(id=ns, index=index, fleet=fleet.name, state_dir=str(state), address=address,
                               host_ip=host_ip, veth=f"pvlb{index}", netns_inode=list(inode) if inode else None,
                               boot_id=_boot_id(), ports=[ln.port for ln in fleet.load_balancer.listeners])
                self = cls(rec, fleet)
                self._save()
            run(["ip", "link", "add", rec.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            rec.veth_ifindex = ifindex(rec.veth)
            self._save()
            run(["ip", "addr", "add", f"{host_ip}/30", "dev", rec.veth])
            run(["ip", "link", "set", rec.veth, "up"])
            run(["ip", "-n", ns, "addr", "add", f"{address}/30", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            lb = fleet.load_balancer
            rules = [IngressRule(protocol="tcp", port=ln.port, cidrs=list(lb.allowed_cidrs), allow_public=True,
                                 description=f"listener {ln.port}") for ln in lb.listeners]
            (d / "firewall.nft").write_text(render_nftables(rules))
            run(["ip", "netns", "exec", ns, "nft", "-f", str(d / "firewall.nft")])
        except BaseException:
            if self is not None:
                self.down()
            raise
        return self

    @staticmethod
    def _allocate(state: Path) -> int:
        for index in range(1, MAX_INDEX + 1):
            ns = f"{NETNS_PREFIX}{index}"
            if Path(f"/run/netns/{ns}").exists() or (state / ns).exists():
                continue
            proc = run(["ip", "netns", "add", ns], check=False)
            if proc.returncode == 0:  # atomic: fails when another process took the name first
                return index
        raise SandboxError(f"no free local load balancer slot (198.18.{BLOCK_BASE + 1}-255.0/24 are taken)")

    @property
    def sources(self) -> LbSources:
        """Where this load balancer reaches members from: its block (traffic and health checks)."""
        b = str(block(self.record.index))
        return LbSources(traffic=(b,), health_checks=(b,), description="local load balancer")

    @property
    def address(self) -> str:
        return self.record.address

    def start(self, members: Sequence[tuple[str, Host]], *, timeout: float = 20.0) -> None:
        """Link each (member name, engine host) to the load balancer, render haproxy.cfg, start HAProxy
        and return once it listens on every listener port (bounded by ``timeout``)."""
        rec, fleet = self.record, self._fleet
        if fleet is None:
            raise SandboxError(f"load balancer {rec.id} was not created by this process; down it and create it again")
        if len(members) > MAX_MEMBERS:
            raise SandboxError(f"at most {MAX_MEMBERS} members per local load balancer")
        try:
            for j, (name, host) in enumerate(members):
                lb_ip, member_ip = member_addresses(rec.index, j)
                link = f"m{j}"
                peer = f"lb{rec.index}"
                with _netns_of(host) as netns:
                    run(["ip", "-n", rec.id, "link", "add", link, "type", "veth", "peer", "name", peer,
                          "netns", netns])
                rec.members.append(LbMember(name=name, host_id=host.id, address=member_ip, lb_address=lb_ip,
                                            link=link))
                self._save()
                run(["ip", "-n", rec.id, "addr", "add", f"{lb_ip}/30", "dev", link])
                run(["ip", "-n", rec.id, "link", "set", link, "up"])
                run(["ip", "-n", host.netns, "addr", "add", f"{member_ip}/30", "dev", peer])
                run(["ip", "-n", host.netns, "link", "set", peer, "up"])
            cfg = rec.dir / "haproxy.cfg"
            cfg.write_text(render_config(fleet, rec))
            check = run(["haproxy", "-c", "-q", "-f", str(cfg)], check=False)
            if check.returncode != 0:
                raise SandboxError(f"haproxy rejected {cfg}: {(check.stderr or check.stdout).strip()[-400:]}")
            with open(rec.dir / "haproxy.log", "ab") as log:
                proc = subprocess.Popen(["ip", "netns", "exec", rec.id, "haproxy", "-db", "-f", str(cfg)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True,
                                        env={"PATH": _SBIN_PATH, "LANG": "C.UTF-8"})
            _STARTED[proc.pid] = proc
            rec.pid = proc.pid
            self._save()
            deadline = time.monotonic() + timeout
            while not (self.socket_ready() and all(self._listening(p) for p in rec.ports)):
                if proc.poll() is not None:
                    raise SandboxError(f"haproxy for {rec.id} exited ({proc.returncode}): "
                                       + (rec.dir / "haproxy.log").read_text(errors="replace")[-400:])
                if time.monotonic() > deadline:
                    raise SandboxError(f"haproxy for {rec.id} did not listen on {rec.address} ports "
                                       f"{rec.ports} within {timeout:g}s")
                time.sleep(0.05)
            rec.status = "up"
            self._save()
        except BaseException:
            self.down()
            raise

    def _listening(self, port: int) -> bool:
        if self.record.pid is None:
            return False
        want = f"{int.from_bytes(ipaddress.IPv4Address(self.record.address).packed, 'little'):08X}:{port:04X}"
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.record.pid}/net/tcp").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[1] == want:
                    return True
        return False

    def socket_ready(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info")
        except (OSError, SandboxError):
            return False

    def _save(self) -> None:
        from polyvm.files import atomic_write

        # A temp file of its own per write (not a fixed "lb.tmp"): two writers of one record (a `pulumi up`
        # and a `polyvm sandbox` drain, say) must not rename each other's half-written file.
        atomic_write(self.record.dir / "lb.json", json.dumps(self.record.to_json(), indent=2, sort_keys=True),
                     mode=0o600)

    def _owned_netns(self) -> tuple[int, int] | None:
        rec = self.record
        if not rec.netns_inode or rec.boot_id != _boot_id():
            return None
        want = (rec.netns_inode[0], rec.netns_inode[1])
        return want if _ns_inode(f"/run/netns/{rec.id}") == want else None

    def down(self) -> None:
        """Stop HAProxy and remove the namespace, every link and the directory. Idempotent; finds what
        to remove by identity (namespace inode, veth ifindex), since other runs reuse names at once."""
        rec = self.record
        ours = self._owned_netns()
        if ours is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids_in_netns(ours):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while pids_in_netns(ours) and time.monotonic() < deadline:
                    self._reap()
                    time.sleep(0.02)
                if not pids_in_netns(ours):
                    break
        # A process leaves its namespace before it becomes a zombie: wait for ours to finish exiting.
        started = _STARTED.pop(rec.pid, None) if rec.pid else None
        if started is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.wait(timeout=10)
        self._reap()
        if rec.veth_ifindex is not None and ifindex(rec.veth) == rec.veth_ifindex:
            run(["ip", "link", "del", rec.veth], check=False)
        if ours is not None:
            # Deleting a veth end destroys its peer in the member at once; a deleted namespace's devices go
            # later, from the kernel's cleanup work, so the members' ends are removed here first.
            for m in rec.members:
                run(["ip", "-n", rec.id, "link", "del", m.link], check=False)
            run(["ip", "netns", "del", rec.id], check=False)
        shutil.rmtree(rec.dir, ignore_errors=True)

    @staticmethod
    def _reap() -> None:
        for pid, proc in list(_STARTED.items()):
            if proc.poll() is not None:
                del _STARTED[pid]

    def leftovers(self) -> list[str]:
        """Everything of this load balancer still on the machine (empty after :meth:`down`)."""
        rec, found = self.record, []
        if rec.netns_inode and _ns_inode(f"/run/netns/{rec.id}") == tuple(rec.netns_inode):
            found.append(f"netns {rec.id}")
        if rec.veth_ifindex is not None and ifindex(rec.veth) == rec.veth_ifindex:
            found.append(f"veth {rec.veth}")
        if rec.pid and _alive(rec.pid):
            found.append(f"haproxy process {rec.pid}")
        if rec.dir.exists():
            found.append(f"dir {rec.dir}")
        return found

    # --- records ---------------------------------------------------------------------------------------
    @classmethod
    def list(cls, engine: Engine) -> list["LocalLoadBalancer"]:
        out = []
        state = Path(engine.state_dir)
        if state.is_dir():
            for d in sorted(state.glob(f"{NETNS_PREFIX}*")):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    out.append(cls(LbRecord.from_json(json.loads((d / "lb.json").read_text()))))
        return out

    @classmethod
    def down_all(cls, engine: Engine, *, fleet: str | None = None) -> list[str]:
        """Remove every recorded load balancer (of ``fleet``); returns their ids."""
        gone = []
        for lb in cls.list(engine):
            if fleet is None or lb.record.fleet == fleet:
                lb.down()
                gone.append(lb.record.id)
        return gone

    # --- the runtime API (polyvm.provisioners.rolling.LoadBalancer) --------------------------------------
    def command(self, line: str, *, timeout: float = 5.0) -> str:
        """Send one command to HAProxy's runtime API and return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.record.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _member(self, member: str) -> LbMember:
        for m in self.record.members:
            if m.name == member:
                return m
        raise SandboxError(f"{member} is not a member of load balancer {self.record.id} "
                           f"(members: {', '.join(m.name for m in self.record.members)})")

    def _set_state(self, member: str, state: str) -> None:
        self._member(member)
        for port in self.record.ports:
            answer = self.command(f"set server be_{port}/{member} state {state}").strip()
            if answer:
                raise SandboxError(f"haproxy refused to set {member} {state}: {answer}")

    def drain(self, member: str) -> None:
        self._set_state(member, "drain")

    def enable(self, member: str) -> None:
        self._set_state(member, "ready")

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """HAProxy's ``show stat`` for the servers: (backend, member) -> columns (status, scur, ...)."""
        text = self.command("show stat").lstrip("# ")
        out = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
                out[(row["pxname"], row["svname"])] = row
        return out

    def _rows(self, member: str) -> list[dict[str, str]]:
        self._member(member)
        st = self.stats()
        return [st[(f"be_{p}", member)] for p in self.record.ports if (f"be_{p}", member) in st]

    def healthy(self, member: str) -> bool:
        rows = self._rows(member)
        # UP (not "UP 1/3", going down), and the latest check passed (not INI: none ran yet).
        return bool(rows) and all(r["status"] == "UP" and r.get("check_status", "").endswith("OK")
                                  for r in rows)

    def status(self, member: str) -> str:
        """HAProxy's status of ``member`` (UP, DOWN, DRAIN, MAINT, 'UP 1/3', ...) in its first backend."""
        rows = self._rows(member)
        return rows[0]["status"] if rows else "unknown"

    def connections(self, member: str) -> int:
        return sum(int(r.get("scur") or 0) for r in self._rows(member))


def render_config(fleet: FleetSpec, record: LbRecord) -> str:
    """haproxy.cfg for ``fleet`` behind ``record`` (from templates/haproxy-fleet.cfg.j2)."""
    import jinja2

    lb = fleet.load_balancer
    assert lb is not None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    listeners = [{"port": ln.port, "target_port": ln.member_port,
                  "mode": "http" if ln.protocol == "http" else "tcp"} for ln in lb.listeners]
    user = "haproxy" if _has_user("haproxy") else None
    return env.get_template("haproxy-fleet.cfg.j2").render(
        fleet=fleet.name, lb_id=record.id, socket=str(record.socket_path), user=user, group=user,
        hc=lb.health_check, health_port=lb.health_port, listeners=listeners, address=record.address,
        members=record.members)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
