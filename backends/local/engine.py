"""The local host engine: VM-like hosts on this Linux machine, without a hypervisor.

A host is

* a network namespace ``pvm-<i>`` joined to this machine by a veth pair on its own /30 inside
  198.19.0.0/16 (part of the 198.18.0.0/15 benchmark range): this machine is ``base+1``, the guest
  ``base+2``; there is no route out, so the guest reaches nothing but this machine;
* its own mount, UTS and PID namespaces whose root is an overlay of this machine's ``/`` with an
  in-memory (tmpfs) upper layer, so nothing written inside reaches the real filesystem;
* its own sshd (PID 1 inside) with a freshly generated ed25519 host key, known before the host starts;
* optionally: a login user with password-less sudo, loop-device data disks, paths removed inside (``scrub``:
  what a new VM would not have), an nftables ruleset applied inside the namespace before sshd starts.

Index ``i`` is allocated atomically by ``ip netns add pvm-<i>`` (it fails when the name is taken), so
several processes (pytest runs, ``polyvm sandbox``) can create hosts at the same time.

Everything about a host lives in ``<state_dir>/pvm-<i>/`` with a ``host.json`` record, so
:meth:`Engine.down` and :meth:`Engine.list` work from a new process and after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.resources
import ipaddress
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from polyvm.errors import SandboxError

#: Where host records live unless told otherwise (``polyvm sandbox`` uses it; tests pass a tmp dir).
DEFAULT_STATE_DIR = Path(os.environ.get("POLYVM_LOCAL_STATE_DIR", "/var/lib/polyvm/local"))

#: Every state dir an engine has started a host from, one a line, so that each host hides all of them
#: (their host keys, the sandbox's client key and passwords), not just its own.
REGISTRY = Path(os.environ.get("POLYVM_LOCAL_REGISTRY", "/var/lib/polyvm/state-dirs"))
#: Hidden inside every host whether registered or not: the default place of polyvm's state, and the
#: test suite's state root (tests/conftest.py).
ALWAYS_HIDDEN = (Path("/var/lib/polyvm"), Path(tempfile.gettempdir()) / "polyvm-test-hosts")

#: Host i gets the /30 at NETWORK + 4*i. 198.19.0.0/16 is the upper half of the benchmark range
#: 198.18.0.0/15; the lower half is left to other tools (e.g. the shared testhost script).
NETWORK = ipaddress.IPv4Network("198.19.0.0/16")
MAX_INDEX = NETWORK.num_addresses // 4 - 1
NETNS_PREFIX = "pvm-"
INSTALL_HINT = "apt-get install -y openssh-server nftables iproute2 sudo"

_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Tools the engine runs, and the Debian package that provides each.
_TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "chroot": "coreutils",
    "sshd": "openssh-server",
    "nft": "nftables",
    "losetup": "mount",
    "sudo": "sudo",
    "useradd": "passwd",
    "cloud-init": "cloud-init",
}

# Runs as PID 1 of the new PID namespace, in new mount + UTS namespaces, inside the host's netns.
# Builds the overlay root, installs the host key and authorized keys, then becomes sshd.
_GUEST_INIT = r"""
set -eu
mount --make-rprivate /
L=/run/polyvm-layers; R=/run/polyvm-root
mkdir -p "$L" "$R"
mount -t tmpfs -o "mode=0755${PVM_ROOT_MB:+,size=${PVM_ROOT_MB}m}" tmpfs "$L"
mkdir -p "$L/upper" "$L/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$L/upper,workdir=$L/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
# Hide every polyvm state dir of this machine (every host's and sandbox's keys and passwords) from inside,
# not just this host's own: /var/lib/polyvm and each dir in the registry (PVM_HIDE, one a line, parents
# first; a dir under one already hidden, or under /tmp or /run, is gone from view already).
printf '%s\n' "$PVM_HIDE" | while IFS= read -r d; do
  if [ -n "$d" ] && [ -d "$R$d" ] && ! [ -L "$R$d" ]; then mount -t tmpfs -o mode=0700,size=16m tmpfs "$R$d"; fi
done
hostname "$PVM_HOSTNAME"
echo "$PVM_HOSTNAME" > "$R/etc/hostname"
echo "127.0.1.1 $PVM_HOSTNAME" >> "$R/etc/hosts"
if [ "$PVM_BOOT" != cloud-init ]; then rm -f "$R"/etc/ssh/ssh_host_*; fi
# Not a security boundary (see docs/local.md), but this machine's secrets need not be in plain view:
# root's SSH keys are hidden and the password hashes replaced (the copy lives in the in-memory layer).
mount -t tmpfs -o mode=0700,size=1m tmpfs "$R/root/.ssh" 2>/dev/null || { mkdir -p "$R/root/.ssh"; \
  mount -t tmpfs -o mode=0700,size=1m tmpfs "$R/root/.ssh"; }
sed -i 's/^\([^:]*\):[^:]*:/\1:*:/' "$R/etc/shadow"
if [ "$PVM_BOOT" != cloud-init ]; then
  install -m 600 "$PVM_DIR/host_key" "$R/etc/ssh/ssh_host_ed25519_key"
  install -m 644 "$PVM_DIR/host_key.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
  install -d -m 700 "$R/root/.ssh"
  install -m 600 "$PVM_DIR/authorized_keys" "$R/root/.ssh/authorized_keys"
fi
install -m 600 "$PVM_DIR/sshd_config" "$R/etc/ssh/polyvm_sshd_config"
# A fresh VM's root has Debian's stock shell start-up files, not this machine's (which may run, e.g.,
# pyenv on every SSH session: ~100 ms each, docs/performance.md).
for f in bashrc profile; do
  if [ -f "/usr/share/base-files/dot.$f" ]; then install -m 644 "/usr/share/base-files/dot.$f" "$R/root/.$f"; fi
done
# What this machine has but a new VM would not (e.g. a package's generated state; the caller names it):
# globs relative to /, removed in the host's own layer.
printf '%s\n' "$PVM_SCRUB" | while IFS= read -r p; do
  if [ -n "$p" ]; then rm -rf "$R"/$p; fi
done
mkdir -p "$R/run/sshd"
if [ "$PVM_BOOT" = cloud-init ]; then
  # Boot like a cloud VM: a NoCloud seed with the user data, then cloud-init's stages, before sshd starts.
  # This machine's cloud-init.disabled (scripts/setup) and any state of its own are removed in this layer.
  rm -f "$R/etc/cloud/cloud-init.disabled"
  rm -rf "$R/var/lib/cloud" "$R/var/log/cloud-init.log" "$R/var/log/cloud-init-output.log"
  install -d -m 700 "$R/var/lib/cloud" "$R/var/lib/cloud/seed" "$R/var/lib/cloud/seed/nocloud"
  install -m 600 "$PVM_DIR/user-data" "$R/var/lib/cloud/seed/nocloud/user-data"
  install -m 600 "$PVM_DIR/meta-data" "$R/var/lib/cloud/seed/nocloud/meta-data"
  install -m 644 "$PVM_DIR/cloud.cfg" "$R/etc/cloud/cloud.cfg.d/99-polyvm-local.cfg"
  for stage in "init --local" "init" "modules --mode config" "modules --mode final"; do
    echo "polyvm: cloud-init $stage"
    # shellcheck disable=SC2086
    timeout "$PVM_CLOUD_INIT_TIMEOUT" chroot "$R" env -i PATH="$PATH" LANG=C.UTF-8 cloud-init $stage
  done
  echo "polyvm: cloud-init done"
elif [ -n "$PVM_USER" ]; then
  chroot "$R" useradd -m -s /bin/bash -p '*' "$PVM_USER"
  u=$(chroot "$R" id -u "$PVM_USER"); g=$(chroot "$R" id -g "$PVM_USER")
  install -d -m 700 -o "$u" -g "$g" "$R/home/$PVM_USER/.ssh"
  install -m 600 -o "$u" -g "$g" "$PVM_DIR/authorized_keys" "$R/home/$PVM_USER/.ssh/authorized_keys"
  echo "$PVM_USER ALL=(ALL) NOPASSWD:ALL" > "$R/etc/sudoers.d/90-polyvm-$PVM_USER"
  chmod 440 "$R/etc/sudoers.d/90-polyvm-$PVM_USER"
fi
: > "$PVM_DIR/ready"
cd "$R"
exec chroot "$R" /bin/sh -c 'sleep "$0"; exec /usr/sbin/sshd -D -e -f /etc/ssh/polyvm_sshd_config' \
  "$PVM_SSHD_DELAY"
"""


#: How a host is set up before its sshd starts: ``direct`` (the engine installs the host key, login user and
#: authorized keys itself) or ``cloud-init`` (a NoCloud seed with the same user data the cloud backends send,
#: and this machine's cloud-init run inside the host's root: see :data:`CLOUD_INIT_CFG`).
BOOT_MODES = ("direct", "cloud-init")

#: /etc/cloud/cloud.cfg.d/99-polyvm-local.cfg inside a cloud-init host. Only the NoCloud seed is looked at
#: (no datasource probing: nothing is sent to a metadata address), networking is left as the engine made it
#: (no DHCP on the link), and only the modules that act inside the host's own root run: none that resizes,
#: partitions or mounts this machine's disks, touches its boot loader, package sources or clock, or powers
#: it off. Names as in Debian's /etc/cloud/cloud.cfg (cloud-init 22.4).
CLOUD_INIT_CFG = """\
# polyvm local host (backends/local/engine.py): boot from the NoCloud seed, inside the host's root only.
datasource_list: [NoCloud, None]
network: {config: disabled}
cloud_init_modules: [migrator, bootcmd, write-files, set_hostname, update_hostname, update_etc_hosts,
                     users-groups, ssh]
cloud_config_modules: [set-passwords, runcmd]
cloud_final_modules: [write-files-deferred, scripts-per-once, scripts-per-boot, scripts-per-instance,
                      scripts-user, final-message]
"""


@dataclass
class Host:
    """One host as recorded in ``<state_dir>/<id>/host.json``."""

    id: str                      # "pvm-<index>": netns name and state subdirectory
    index: int
    name: str                    # hostname inside (default: id)
    guest_ip: str                # the host's address (SSH here)
    host_ip: str                 # this machine's end of the link
    veth: str                    # this machine's veth interface
    host_key: str                # "ssh-ed25519 AAAA..." (pinned)
    user: str                    # login user: "root" or the sudo user
    state_dir: str
    pid: int | None = None       # the `unshare` process (in the netns, outside the PID namespace)
    init_pid: int | None = None  # PID 1 of the host's PID namespace, as seen from this machine
    netns_inode: list[int] | None = None   # (st_dev, st_ino) of the netns, to find processes after a crash
    veth_ifindex: int | None = None         # of this machine's veth end (names are reused, indexes are not)
    disks: list[str] = field(default_factory=list)        # loop devices, in order
    disk_images: list[str] = field(default_factory=list)  # their backing files
    scrub: list[str] = field(default_factory=list)
    sshd_delay: float = 0.0
    root_mb: int | None = None
    firewall: bool = False
    bastion: bool = False        # its sshd allows local TCP forwarding (jump host)
    boot: str = "direct"         # one of BOOT_MODES
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    boot_id: str = ""
    status: str = "creating"     # creating | up

    @property
    def address(self) -> str:
        return self.guest_ip

    @property
    def netns(self) -> str:
        """The host's network namespace (``ip -n <netns>``)."""
        return self.id

    @property
    def dir(self) -> Path:
        return Path(self.state_dir) / self.id

    @property
    def known_hosts_line(self) -> str:
        return f"{self.guest_ip} {self.host_key}"

    @property
    def log_path(self) -> Path:
        return self.dir / "log"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Host":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class HostHealth:
    """Whether a recorded host can be used, and if not, why and what replacing it loses."""

    host_id: str
    state: str      # "up" (running, sshd listening) | "no-sshd" (running, sshd gone) | "dead"
    reason: str     # "" when up; otherwise a sentence fragment ("its processes are gone ...")
    lost: str       # what removing it destroys ("" when up)

    @property
    def usable(self) -> bool:
        return self.state == "up"

    @property
    def message(self) -> str:
        """One line for a person: what happened and what is gone."""
        if self.usable:
            return f"host {self.host_id} is up"
        return f"host {self.host_id} is unusable: {self.reason}; {self.lost}"


def addresses(index: int) -> tuple[str, str]:
    """(this machine's address, guest address) of host ``index``."""
    if not 1 <= index <= MAX_INDEX:
        raise ValueError(f"host index must be 1..{MAX_INDEX}")
    base = NETWORK.network_address + 4 * index
    return str(base + 1), str(base + 2)


def generate_host_key(comment: str = "") -> tuple[bytes, str]:
    """A fresh ed25519 key: (OpenSSH private key PEM, "ssh-ed25519 AAAA..." public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def register_state_dir(path: str | os.PathLike[str]) -> bool:
    """Record ``path`` in :data:`REGISTRY` (entries whose dir is gone are dropped on the way) and hide it
    inside every host already running. False when it was registered already."""
    path = Path(path).resolve()
    REGISTRY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(REGISTRY.with_name(REGISTRY.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = registered_state_dirs()
        if path in known:
            return False
        keep = [p for p in known if p.is_dir()] + [path]
        fd, tmp = tempfile.mkstemp(dir=REGISTRY.parent, prefix=f".{REGISTRY.name}.")
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{p}\n" for p in keep))
        os.replace(tmp, REGISTRY)
    # Hosts started before this dir existed mounted over the others only: cover it in them now. (A host
    # of another process that is starting at this very moment may miss it.)
    for other in keep:
        eng = Engine(other)
        for host in eng.list():
            if eng.is_running(host):
                _run(["nsenter", "-t", str(host.init_pid), "-m", "-r", "--", "/bin/sh", "-c",
                      'if [ -d "$1" ] && ! [ -L "$1" ]; then mount -t tmpfs -o mode=0700,size=16m tmpfs "$1"; fi',
                      "sh", str(path)], check=False)
    return True


def registered_state_dirs() -> list[Path]:
    try:
        return [Path(line) for line in REGISTRY.read_text().splitlines() if line.startswith("/")]
    except FileNotFoundError:
        return []


def hidden_dirs(*extra: Path) -> list[str]:
    """Directories every host mounts an empty tmpfs over, parents before their children."""
    dirs = {str(p) for p in (*ALWAYS_HIDDEN, DEFAULT_STATE_DIR.resolve(), *registered_state_dirs(), *extra)}
    return sorted(d for d in dirs if d != "/" and "\n" not in d)


def render_sshd_config(listen_address: str, *, bastion: bool = False, pam: bool = False) -> str:
    """The host's sshd configuration (templates/sshd_config)."""
    text = importlib.resources.files("polyvm.backends.local").joinpath("templates/sshd_config").read_text()
    return string.Template(text).substitute(listen_address=listen_address,
                                            tcp_forwarding="local" if bastion else "no",
                                            use_pam="yes" if pam else "no")


def which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


def missing_prerequisites(*, firewall: bool = True, disks: bool = True, user: bool = True,
                          cloud_init: bool = False) -> list[str]:
    """What this machine lacks to run hosts, as human-readable problems (empty when all is there)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, mounts and loop devices need it)")
    wanted = ["ip", "unshare", "nsenter", "mount", "chroot", "sshd"]
    if firewall:
        wanted.append("nft")
    if disks:
        wanted.append("losetup")
    if user:
        wanted += ["sudo", "useradd"]
    if cloud_init:
        wanted.append("cloud-init")
    missing = [t for t in wanted if which(t) is None]
    if missing:
        pkgs = sorted({_TOOLS[t] for t in missing})
        problems.append(f"missing {', '.join(missing)} (Debian packages: {', '.join(pkgs)})")
    return problems


def check_prerequisites(**kwargs: bool) -> None:
    """Raise SandboxError saying exactly what to do when this machine cannot run hosts. Changes nothing."""
    problems = missing_prerequisites(**kwargs)
    if not problems:
        return
    todo = []
    if any(p.startswith("missing ") for p in problems):
        todo.append(f"as root, run: {INSTALL_HINT}")
    if os.geteuid() != 0:
        todo.append("run polyvm as root (e.g. with sudo)")
    raise SandboxError("the local backend cannot run here: " + "; ".join(problems) + ". To fix: "
                       + "; then ".join(todo))


def run(argv: Sequence[str], *, input: str | bytes | None = None, check: bool = True,
        timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a system tool (ip, nft, ...) with sbin on PATH; SandboxError with its stderr when it fails."""
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":" + _SBIN_PATH)
    proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, env=env,
                          text=not isinstance(input, bytes))
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        raise SandboxError(f"{' '.join(argv[:3])} failed (exit {proc.returncode}): {err.strip()[-500:]}")
    return proc


def _netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def pids_in_netns(dev_ino: tuple[int, int]) -> list[int]:
    """Processes (other than this one) in the network namespace with this (st_dev, st_ino)."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == dev_ino:
            pids.append(int(entry))
    return pids


def _listening(pid: int, ip: str, port: int) -> bool:
    """Whether a TCP socket listens on ip:port in the network namespace of process ``pid``."""
    want = f"{int.from_bytes(ipaddress.IPv4Address(ip).packed, 'little'):08X}:{port:04X}"
    want_any = f"00000000:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[1] in (want, want_any):
                    return True
    except (OSError, StopIteration):
        pass
    return False


def ifindex(ifname: str) -> int | None:
    """The interface's index in this machine's namespace (None when there is none of that name)."""
    try:
        with open(f"/sys/class/net/{ifname}/ifindex") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# The engine's own callers use the private names.
_run, _pids_in_netns, _ifindex = run, pids_in_netns, ifindex


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


@contextlib.contextmanager
def interrupts_deferred():
    """A Ctrl-C (SIGINT) arriving inside the block takes effect when the block ends (only the main thread
    gets signals; elsewhere this does nothing). For steps that must not be cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = signal.getsignal(signal.SIGINT)
    if old is None:  # a handler not installed from Python: leave it alone
        yield
        return
    signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            signal.raise_signal(signal.SIGINT)  # now, through the handler that was there before


# Popen objects of hosts started by this process, so their exit status is collected (no zombies).
_STARTED: dict[int, subprocess.Popen] = {}


class Engine:
    """Creates, lists, runs commands in and removes local hosts recorded under ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR

    # --- records ---------------------------------------------------------------------------------------
    def _ensure_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        register_state_dir(self.state_dir)

    def _save(self, host: Host) -> None:
        from polyvm.files import atomic_write

        atomic_write(host.dir / "host.json", json.dumps(host.to_json(), indent=2, sort_keys=True), mode=0o600)

    def get(self, host_id: str) -> Host | None:
        try:
            return Host.from_json(json.loads((self.state_dir / host_id / "host.json").read_text()))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    def list(self) -> list[Host]:
        """Every host recorded in the state dir (running or not), by index."""
        hosts = []
        if self.state_dir.is_dir():
            for d in self.state_dir.iterdir():
                if d.name.startswith(NETNS_PREFIX) and (h := self.get(d.name)) is not None:
                    hosts.append(h)
        return sorted(hosts, key=lambda h: h.index)

    def find(self, name: str) -> Host | None:
        """A host by id ("pvm-3") or hostname."""
        for h in self.list():
            if name in (h.id, h.name):
                return h
        return None

    def is_running(self, host: Host) -> bool:
        """Whether the host's init process is alive and still in the host's network namespace."""
        if host.status != "up" or host.init_pid is None or host.netns_inode is None:
            return False
        try:
            st = os.stat(f"/proc/{host.init_pid}/ns/net")
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == tuple(host.netns_inode)

    def sshd_listening(self, host: Host) -> bool:
        return host.pid is not None and _listening(host.pid, host.guest_ip, 22)

    def health(self, host: Host) -> HostHealth:
        """Up, running without sshd, or dead (and why); ``lost`` says what goes with it when it is removed:
        its root filesystem lives in memory, so a dead host's files are already gone, and its data disks'
        images are deleted by :meth:`down`."""
        if self.is_running(host):
            if self.sshd_listening(host):
                return HostHealth(host.id, "up", "", "")
            state, reason = "no-sshd", "it runs but its sshd is not listening"
        elif host.boot_id and host.boot_id != _boot_id():
            state, reason = "dead", "this machine restarted since it was created (local hosts do not survive that)"
        elif host.status != "up":
            state, reason = "dead", "it never finished starting"
        else:
            state, reason = "dead", "its processes are gone (killed or crashed)"
        if state == "no-sshd":
            lost = "replacing it loses everything written inside it (its root filesystem is in memory)"
        else:
            lost = "everything written inside it is gone (its root filesystem was in memory)"
        if host.disk_images:
            lost += f"; replacing it deletes its data disk(s) {', '.join(host.disks)} and the data on them"
        return HostHealth(host.id, state, reason, lost)

    # --- up --------------------------------------------------------------------------------------------
    def _allocate(self) -> int:
        taken = _netns_names()
        for index in range(1, MAX_INDEX + 1):
            ns = f"{NETNS_PREFIX}{index}"
            if ns in taken or (self.state_dir / ns).exists():
                continue
            proc = _run(["ip", "netns", "add", ns], check=False)
            if proc.returncode == 0:
                return index
            if ns not in _netns_names():   # failed for another reason than "taken"
                raise SandboxError(f"ip netns add {ns} failed: {proc.stderr.strip()}")
        raise SandboxError("no free local host slot (all 198.19.0.0/16 links are taken)")

    def up(self, *, authorized_keys: str, name: str | None = None, user: str | None = None,
           disks_mb: Iterable[int] = (), scrub: Iterable[str] = (), sshd_delay: float = 0.0,
           firewall: str | None = None, labels: Mapping[str, str] | None = None,
           root_mb: int | None = None, timeout: float | None = None, bastion: bool = False,
           boot: str = "direct", user_data: Callable[[str, str], str] | None = None) -> Host:
        """Start one host and return once it is usable: sshd listening (or, with ``sshd_delay``, once
        everything but sshd is in place). ``firewall`` is an nftables ruleset (see
        :func:`polyvm.firewall.render_nftables`) applied inside before anything listens; ``root_mb``
        caps what can be written to the root filesystem (kept in memory; default: tmpfs default, half
        of RAM). ``bastion``: the host is a jump host (its sshd allows local TCP forwarding; otherwise
        no forwarding of any kind). ``boot`` (:data:`BOOT_MODES`): ``cloud-init`` sets the host up through
        cloud-init from a NoCloud seed whose user data is ``user_data(host_private_key, host_public_key)``
        (default: :func:`polyvm.cloudinit.render_cloud_config` for ``name``, ``user`` and
        ``authorized_keys``); it needs a login user other than root (cloud-init's ``disable_root``).
        ``timeout``: seconds for the whole start (default 60, or 180 through cloud-init: a start takes well
        under a second on an idle machine, several when many start at once on a loaded one)."""
        if boot not in BOOT_MODES:
            raise ValueError(f"boot must be one of {', '.join(BOOT_MODES)}, not {boot!r}")
        if boot == "cloud-init" and user in (None, "root"):
            raise ValueError("a cloud-init boot needs a login user other than root (user data disables root)")
        if timeout is None:
            timeout = 180.0 if boot == "cloud-init" else 60.0
        disks_mb = [int(d) for d in disks_mb]
        scrub = [str(p) for p in scrub]
        bad = [p for p in scrub if p.startswith("/") or ".." in p.split("/") or not p.strip() or "\n" in p]
        if bad:
            raise ValueError(f"scrub paths must be globs relative to /, without '..': {bad}")
        if any(d <= 0 for d in disks_mb):
            raise ValueError("disk sizes must be positive (MiB)")
        check_prerequisites(firewall=firewall is not None, disks=bool(disks_mb), user=user not in (None, "root"),
                            cloud_init=boot == "cloud-init")
        if user == "root":
            user = None
        self._ensure_state_dir()

        host: Host | None = None
        try:
            # From `ip netns add` until the record is on disk nothing (down(), another process) knows the
            # namespace is ours: a Ctrl-C in between would leave it behind, so it takes effect after that.
            with interrupts_deferred():
                host = self._new_host(
                    name=name, user=user or "root", scrub=scrub, sshd_delay=float(sshd_delay),
                    root_mb=int(root_mb) if root_mb else None, firewall=firewall is not None,
                    bastion=bool(bastion), boot=boot, labels=dict(labels or {}))
            self._start(host, authorized_keys, disks_mb, firewall, timeout, user_data)
        except BaseException:
            if host is not None:
                self.down(host)
            raise
        return host

    def _new_host(self, *, name: str | None, **fields: Any) -> Host:
        """Take a free index (its namespace) and write the host's first record; on failure the namespace
        is given back."""
        index = self._allocate()
        ns = f"{NETNS_PREFIX}{index}"
        hdir = self.state_dir / ns
        try:
            host_ip, guest_ip = addresses(index)
            shutil.rmtree(hdir, ignore_errors=True)
            hdir.mkdir(mode=0o700)
            st = os.stat(f"/run/netns/{ns}")
            host = Host(id=ns, index=index, name=name or ns, guest_ip=guest_ip, host_ip=host_ip,
                        veth=f"pvm{index}", host_key="", state_dir=str(self.state_dir),
                        netns_inode=[st.st_dev, st.st_ino], created=time.time(), boot_id=_boot_id(), **fields)
            self._save(host)
        except BaseException:
            _run(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(hdir, ignore_errors=True)
            raise
        return host

    def _start(self, host: Host, authorized_keys: str, disks_mb: list[int], firewall: str | None,
               timeout: float, user_data: Callable[[str, str], str] | None = None) -> None:
        hdir, ns = host.dir, host.id
        private, public = generate_host_key(host.name)
        fd = os.open(hdir / "host_key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        (hdir / "host_key.pub").write_text(public + "\n")
        (hdir / "authorized_keys").write_text(authorized_keys.strip() + "\n")
        (hdir / "sshd_config").write_text(render_sshd_config(host.guest_ip, bastion=host.bastion,
                                                                pam=host.boot == "cloud-init"))
        host.host_key = public
        if host.boot == "cloud-init":
            self._write_seed(host, private.decode(), public, authorized_keys, user_data)

        for i, size in enumerate(disks_mb):
            img = hdir / f"disk{i}.img"
            with open(img, "wb") as f:
                f.truncate(size * 1024 * 1024)
            host.disk_images.append(str(img))
            self._save(host)  # record the image before attaching, so down() can find its loop device
            dev = _run(["losetup", "--find", "--show", str(img)]).stdout.strip()
            host.disks.append(dev)
            self._save(host)

        _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        host.veth_ifindex = _ifindex(host.veth)
        self._save(host)
        _run(["ip", "-batch", "-"], input=f"addr add {host.host_ip}/30 dev {host.veth}\n"
                                          f"link set {host.veth} up\n")
        _run(["ip", "-n", ns, "-batch", "-"], input=f"addr add {host.guest_ip}/30 dev eth0\n"
                                                    "link set eth0 up\nlink set lo up\n")
        if firewall is not None:
            (hdir / "firewall.nft").write_text(firewall)
            _run(["ip", "netns", "exec", ns, "nft", "-f", str(hdir / "firewall.nft")])

        env = {
            "PATH": _SBIN_PATH, "LANG": "C.UTF-8",
            "PVM_DIR": str(hdir), "PVM_HIDE": "\n".join(hidden_dirs(self.state_dir.resolve())),
            "PVM_HOSTNAME": host.name, "PVM_GUEST_IP": host.guest_ip, "PVM_SCRUB": "\n".join(host.scrub),
            "PVM_USER": host.user if host.user != "root" else "",
            "PVM_SSHD_DELAY": f"{host.sshd_delay:g}",
            "PVM_ROOT_MB": str(host.root_mb or ""),
            "PVM_BOOT": host.boot,
            "PVM_CLOUD_INIT_TIMEOUT": f"{max(5, int(timeout))}",
        }
        with open(host.log_path, "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--pid", "--fork",
                 "--kill-child", "--mount-proc", "/bin/sh", "-c", _GUEST_INIT],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        _STARTED[proc.pid] = proc
        host.pid = proc.pid
        self._save(host)

        deadline = time.monotonic() + timeout
        ready = hdir / "ready"
        while True:
            if proc.poll() is not None:
                raise SandboxError(f"host {host.id} failed to start (exit {proc.returncode}): "
                                   + host.log_path.read_text(errors="replace").strip()[-600:])
            if host.init_pid is None:
                kids = _children(proc.pid)
                if kids:
                    host.init_pid = kids[0]
            if ready.exists() and host.init_pid is not None and (
                    host.sshd_delay > 0 or _listening(proc.pid, host.guest_ip, 22)):
                break
            if time.monotonic() > deadline:
                raise SandboxError(f"host {host.id} did not become ready within {timeout:g}s: "
                                   + host.log_path.read_text(errors="replace").strip()[-600:])
            time.sleep(0.005)
        host.status = "up"
        self._save(host)

    @staticmethod
    def _write_seed(host: Host, private: str, public: str, authorized_keys: str,
                    user_data: Callable[[str, str], str] | None) -> None:
        """The NoCloud seed (user-data 0600: it holds the host's private key, like a cloud's user data)."""
        if user_data is None:
            from polyvm.cloudinit import render_cloud_config

            text = render_cloud_config(host.name, host.user, authorized_keys.splitlines(), private, public)
        else:
            text = user_data(private, public)
        fd = os.open(host.dir / "user-data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        # A new instance-id per host: cloud-init runs its per-instance modules once per id.
        (host.dir / "meta-data").write_text(f"instance-id: {host.id}-{secrets.token_hex(6)}\n"
                                            f"local-hostname: {host.name}\n")
        (host.dir / "cloud.cfg").write_text(CLOUD_INIT_CFG)

    def apply_firewall(self, host: Host, ruleset: str) -> None:
        """Load an nftables ruleset in the host's network namespace (replacing polyvm's table)."""
        if host.id not in _netns_names() or self._owned_netns(host) is None:
            raise SandboxError(f"host {host.id} is not running")
        path = host.dir / "firewall.nft"
        path.write_text(ruleset)
        _run(["ip", "netns", "exec", host.id, "nft", "-f", str(path)])
        host.firewall = True
        self._save(host)

    def set_labels(self, host: Host, labels: Mapping[str, str]) -> None:
        host.labels = dict(labels)
        self._save(host)

    # --- using a host ----------------------------------------------------------------------------------
    def nsenter_argv(self, host: Host) -> list[str]:
        """argv prefix that runs a command inside the host (all its namespaces and its root)."""
        if not self.is_running(host):
            raise SandboxError(f"host {host.id} is not running")
        return ["nsenter", "-t", str(host.init_pid), "-m", "-u", "-n", "-p", "-r", "-w", "--"]

    def exec(self, host: Host, argv: Sequence[str] | str, *, input: str | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``argv`` (a string runs through /bin/sh -c) inside the host as root; returns text output."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        cmd = self.nsenter_argv(host) + ["env", "-i", f"PATH={_SBIN_PATH}", "HOME=/root", "LANG=C.UTF-8",
                                         *argv]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise SandboxError(f"command in {host.id} failed (exit {proc.returncode}): "
                               f"{' '.join(argv)[:200]}: {proc.stderr.strip()[-500:]}")
        return proc

    # --- down ------------------------------------------------------------------------------------------
    def down(self, host: Host | str) -> None:
        """Remove a host and everything it holds: processes, namespaces, mounts, loop devices, veth and
        files. Idempotent; works for hosts that crashed or were only partly created."""
        if isinstance(host, str):
            found = self.get(host) or self.find(host)
            if found is None:
                return
            host = found
        if not (host.dir / "host.json").exists():
            return  # already removed (a second down, or another process did it)
        ns = host.id
        ours = self._owned_netns(host)
        # Every process of the host is in its netns (sshd, sessions, postgres, the unshare parent).
        # SIGKILL: unshare ignores SIGTERM, and the PID namespace dies with its PID 1.
        if ours is not None:
            for _ in range(250):
                pids = _pids_in_netns(ours)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self._reap()
                time.sleep(0.02)
        self._reap()
        taken_by_other = False
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{ns}")
            taken_by_other = ours is None or (st.st_dev, st.st_ino) != ours
        if not taken_by_other:
            # The veth first, while the netns name is still ours: once the name is free another process
            # may take index i and create its own veth of the same name.
            if host.veth_ifindex is not None and _ifindex(host.veth) == host.veth_ifindex:
                _run(["ip", "link", "del", host.veth], check=False)
            if ns in _netns_names():
                _run(["ip", "netns", "del", ns], check=False)
        for img in host.disk_images:
            for dev in _loop_devices_of(img):
                _run(["losetup", "-d", dev], check=False)
        shutil.rmtree(host.dir, ignore_errors=True)

    def down_all(self, *, labels: Mapping[str, str] | None = None) -> list[Host]:
        """Down every recorded host (whose labels include ``labels``); returns those removed."""
        gone = []
        for h in self.list():
            if labels and any(h.labels.get(k) != v for k, v in labels.items()):
                continue
            self.down(h)
            gone.append(h)
        return gone

    @staticmethod
    def _owned_netns(host: Host) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the host's netns if it still exists and is the one this record made.

        Namespace inode numbers are reused once a namespace is gone, so an inode alone proves nothing:
        it must still be reachable through /run/netns/<id> or one of the host's own processes, in this boot.
        """
        if not host.netns_inode or host.boot_id != _boot_id():
            return None
        want = (host.netns_inode[0], host.netns_inode[1])
        for path in (f"/run/netns/{host.id}", f"/proc/{host.pid}/ns/net", f"/proc/{host.init_pid}/ns/net"):
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == want:
                    return want
        return None

    @staticmethod
    def _reap() -> None:
        for pid, proc in list(_STARTED.items()):
            if proc.poll() is not None:
                del _STARTED[pid]


def _process_alive(pid: int) -> bool:
    """Running (a zombie holds nothing: it only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def leftovers(host: Host) -> list[str]:
    """Everything of ``host`` still present on this machine, found by identity (netns inode, veth ifindex,
    loop backing file, PIDs), since other runs reuse the names at once. Empty after a complete ``down``."""
    found = []
    try:
        st = os.stat(f"/run/netns/{host.id}")
        if [st.st_dev, st.st_ino] == list(host.netns_inode or []):
            found.append(f"netns {host.id}")
    except OSError:
        pass
    if _ifindex(host.veth) == host.veth_ifindex:
        found.append(f"veth {host.veth}")
    for img in host.disk_images:
        found += [f"loop {d} ({img})" for d in _loop_devices_of(img)]
    for pid in (host.pid, host.init_pid):
        if pid and _process_alive(pid):
            found.append(f"process {pid}")
    if host.dir.exists():
        found.append(f"dir {host.dir}")
    return found


def _loop_devices_of(image: str) -> list[str]:
    """Loop devices whose backing file is ``image`` (read from sysfs; safe against reused numbers)."""
    out = []
    target = os.path.realpath(image)
    for blk in Path("/sys/block").glob("loop*"):
        try:
            backing = (blk / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") == target:
            out.append(f"/dev/{blk.name}")
    return out
