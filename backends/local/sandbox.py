"""``polyvm sandbox``: the whole product on this machine. Local hosts (through the local backend), then the
guest baseline and a recipe (any registered one) over SSH with ``run_recipe``, then a use from this machine.

Everything lives in the local backend's state directory (default /var/lib/polyvm/local, mode 0700):
the hosts' records (``pvm-<i>/``) and ``sandbox/`` with the sandbox's own SSH key (``id_ed25519``), the
recipes' generated secrets (``passwords.json``, 0600) and a ``known_hosts`` of the pinned host keys.
Sandbox hosts carry the label ``polyvm-sandbox=<vm name>`` (and the recipe's name and ports); ``down``
removes exactly those. The sandbox names no recipe but its default (``postgres``).

Several runs may share a state dir at once: the key is generated and the secrets and known_hosts written
under locks in ``sandbox/`` with files replaced in one step (:mod:`polyvm.files`), and making a VM holds
``sandbox/vm-<name>.lock`` from "is it there?" to "ready", so a second ``up`` of the same name waits for the
first (saying who that is) and then reuses its host instead of taking a host being made for a dead one.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from polyvm.errors import ConfigError, SandboxError
from polyvm.files import atomic_write, locked, read_text
from polyvm.spec import VmSpec, parse_spec

from . import engine as eng

LABEL = "polyvm-sandbox"
RECIPE_LABEL = "polyvm-sandbox-recipe"
PORTS_LABEL = "polyvm-sandbox-ports"
DEFAULT_RECIPE = "postgres"
#: The tag a fleet's members carry (polyvm.fleet.FleetSpec.member_specs); hosts keep tags as labels.
FLEET_TAG = "polyvm-fleet"
#: Seconds a second ``up`` (or a ``down``) of a VM waits for another run that is making that VM; a
#: recipe's first run on a loaded machine takes a minute or two.
VM_LOCK_TIMEOUT = 900.0

Progress = Callable[[str, str], None]  # (vm name, what is happening)


@dataclass
class SandboxVm:
    """One sandbox VM after ``up``: where it is, how to log in, what the recipe says it offers."""

    name: str
    host_id: str
    address: str
    ssh_user: str
    host_key: str
    disks: dict[str, str]
    recipe: str
    created: bool                      # False when an existing host was reused
    outputs: dict[str, Any] = field(default_factory=dict)   # the recipe's outputs (no secrets)
    recipe_changes: list[str] = field(default_factory=list)
    checked: str = ""                  # what was used from this machine (a login, a request)
    login_seconds: float | None = None  # from the start of `up` to that working use
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        # The recipe's outputs also at the top level (dsn, url, ...), as `polyvm sandbox up --json` always had.
        for k, v in self.outputs.items():
            d.setdefault(k, v)
        return d


class Sandbox:
    """The sandbox's files and hosts in one state directory."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.engine = eng.Engine(state_dir)
        self.state_dir = self.engine.state_dir
        self.dir = self.state_dir / "sandbox"
        self.key_path = self.dir / "id_ed25519"
        self.passwords_path = self.dir / "passwords.json"   # the recipes' generated secrets (0600)
        self.known_hosts_path = self.dir / "known_hosts"

    # --- files ---------------------------------------------------------------------------------------------
    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise SandboxError(f"polyvm sandbox needs root (its state in {self.state_dir} is root's, mode 0700); "
                               "run it with sudo")

    def _ensure_dir(self) -> None:
        """``sandbox/`` (0700) in the state dir; ConfigError when the state dir cannot be made there."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the sandbox state dir {self.dir}: {exc.strerror}") from None

    def _lock(self, name: str, what: str, timeout: float = 60.0, progress: Callable[[str], None] | None = None):
        self._ensure_dir()
        return locked(self.dir / f"{name}.lock", what=what, timeout=timeout, on_wait=progress)

    def public_key(self) -> str:
        """The sandbox's own login key (generated once, 0600), used to provision and for `sandbox ssh`.
        Concurrent first calls agree on one key pair (generated under ``key.lock``; the private key is
        written last, so a key file that exists always has its public half next to it)."""
        pub = self.key_path.with_suffix(".pub")
        if not self.key_path.exists():
            with self._lock("key", f"the sandbox key in {self.dir}"):
                if not self.key_path.exists():
                    private, public = eng.generate_host_key("polyvm-sandbox")
                    atomic_write(pub, public + " polyvm-sandbox\n", mode=0o644)
                    atomic_write(self.key_path, private, mode=0o600)
        return pub.read_text().strip()

    def _write_known_hosts(self) -> None:
        if not self.dir.exists():
            return
        with self._lock("known_hosts", f"the sandbox known_hosts in {self.dir}"):
            lines = [h.known_hosts_line for h in self.hosts() if h.host_key]
            atomic_write(self.known_hosts_path, "".join(line + "\n" for line in lines), mode=0o600)

    def passwords(self) -> dict[str, str]:
        """The generated secrets (e.g. database passwords) by name."""
        if not self.passwords_path.exists():
            return {}
        try:
            return dict(json.loads(read_text(self.passwords_path, what="sandbox passwords file")))
        except ValueError as exc:
            raise ConfigError(f"sandbox passwords file {self.passwords_path} is not valid JSON: {exc}") from None

    # --- hosts ----------------------------------------------------------------------------------------------
    def hosts(self) -> list[eng.Host]:
        self._require_root()
        return [h for h in self.engine.list() if LABEL in h.labels]

    def find(self, name: str) -> eng.Host | None:
        for h in self.hosts():
            if name in (h.labels.get(LABEL), h.id, h.name):
                return h
        return None

    def default_spec(self, recipe: Any = None, inputs: Mapping[str, Any] | None = None) -> VmSpec:
        """The built-in sample (templates/sandbox.yaml) for this machine's OS, with the sandbox's key, opening
        the recipe's ports to this machine."""
        import jinja2
        import yaml

        from . import HOST_FAMILY, HOST_VERSION

        if not (HOST_FAMILY and HOST_VERSION):
            raise SandboxError("this machine's OS (from /etc/os-release) is not one polyvm supports, and local "
                               "hosts are copies of it; supported: debian 12, ubuntu 22.04/24.04, rhel 9, "
                               "amazon-linux 2023")
        ports: list[int] = []
        if recipe is not None:
            ports = [p for p in recipe.ports(recipe.parse_inputs(_ports_only(recipe, inputs or {})))
                     if p != 22]
        text = importlib.resources.files("polyvm.backends.local").joinpath("templates/sandbox.yaml").read_text()
        rendered = jinja2.Template(text, undefined=jinja2.StrictUndefined).render(
            family=HOST_FAMILY, version=HOST_VERSION, public_key=self.public_key(), ports=ports,
            recipe=recipe.name if recipe is not None else "none")
        return parse_spec(yaml.safe_load(rendered), source="built-in sandbox spec")

    # --- up ---------------------------------------------------------------------------------------------
    def up(self, specs: Sequence[VmSpec] | None = None, *, count: int = 1, recipe: str | None = DEFAULT_RECIPE,
           inputs: Mapping[str, Any] | None = None, progress: Progress | None = None,
           started: float | None = None, inputs_source: str | None = None) -> list[SandboxVm]:
        """Create (or reuse) the hosts, apply the guest baseline and the recipe on each over SSH, use the
        service once from this machine.

        Running it again reuses running hosts (the recipe changes nothing the second time) and
        replaces hosts that died."""
        from polyvm.plugins import get_backend, get_recipe
        from polyvm.provisioners.fanout import parallel_map

        started = time.monotonic() if started is None else started
        say = progress or (lambda _n, _s: None)
        eng.check_prerequisites()
        self._require_root()
        if count < 1:
            raise SandboxError("--count must be at least 1")
        backend = get_backend("local")
        the_recipe = get_recipe(recipe) if recipe else None
        if the_recipe is not None:  # the user's inputs are checked before any host exists
            the_recipe.parse_inputs(the_recipe.defaults_for(_placeholder(), _ports_only(the_recipe, inputs or {})),
                                    source=inputs_source or f"sandbox {the_recipe.name} inputs")
        elif inputs:
            raise ConfigError("recipe inputs (--inputs) need a recipe, not --recipe none")
        for spec in specs or []:  # a user's specs are checked before anything is written
            self._check_spec(backend, spec)
        pub = self.public_key()
        if specs is None:
            specs = [self.default_spec(the_recipe, inputs)]
            self._check_spec(backend, specs[0])
        wanted: list[VmSpec] = []
        for spec in specs:
            for i in range(count):
                wanted.append(spec if count == 1 else spec.model_copy(update={"name": f"{spec.name}-{i + 1}"}))
        names = [s.name for s in wanted]
        if len(set(names)) != len(names):
            raise SandboxError(f"VM names must be unique: {', '.join(names)}")

        lock = threading.Lock()
        done, failed = parallel_map(lambda spec: self._up_one(backend, spec, pub, the_recipe, inputs or {}, say,
                                                              started, lock),
                                    wanted, parallel=8, names=names)
        if failed:
            if len(wanted) == 1:
                raise next(iter(failed.values()))
            raise SandboxError("; ".join(f"{n}: {e}" for n, e in failed.items())
                               + " (the hosts stay up for inspection: polyvm sandbox status / ssh; "
                                 "remove them with polyvm sandbox down)")
        self._write_known_hosts()
        return list(done.values())

    @staticmethod
    def _check_spec(backend: Any, spec: VmSpec) -> None:
        backend.check(spec)
        if not _allows(spec, 22, eng.NETWORK):
            raise SandboxError(f"{spec.name}: the spec's ingress must allow SSH (22) from this machine's end "
                               f"of the link ({eng.NETWORK} or wider, e.g. 198.18.0.0/15) so the sandbox "
                               "can provision the host")

    def _host_for(self, backend: Any, spec: VmSpec, pub: str, recipe: Any, say: Progress,
                  lock: threading.Lock) -> tuple[eng.Host, bool, str]:
        # Called with the VM's lock held: a host of this name that is not running is not one another run
        # is still making.
        with lock:
            existing = [h for h in self.hosts() if h.labels.get(LABEL) == spec.name]
        lost = ""
        for h in existing:
            if self.engine.is_running(h) and self.engine.sshd_listening(h):
                say(spec.name, f"reusing {h.id} ({h.guest_ip})")
                return h, False, ""
            lost = f"replaced {h.id} ({h.guest_ip}): {self.engine.health(h).message}"
            say(spec.name, lost)
            self.engine.down(h)
        say(spec.name, "creating host")
        extra = [] if pub.split()[:2] == spec.ssh.public_key.split()[:2] else [pub]
        labels = {LABEL: spec.name, RECIPE_LABEL: recipe.name if recipe is not None else ""}
        host = backend.create_host(spec, backend.settings_model(state_dir=str(self.state_dir)),
                                   extra_authorized_keys=extra, labels=labels)
        return host, True, lost

    def recipe_inputs(self, recipe: Any, host: Any, record: eng.Host, overrides: Mapping[str, Any],
                      lock: threading.Lock) -> Any:
        """The recipe's inputs for ``host``: its sandbox defaults, the user's ``overrides`` on top, secrets
        kept in (or generated into) passwords.json."""
        data = {**recipe.sandbox_inputs(host, record.host_ip), **overrides}
        with lock:
            inputs = recipe.parse_inputs(recipe.defaults_for(host, data), source=f"sandbox {recipe.name} inputs")
            self._ensure_dir()
            inputs, _generated = recipe.ensure_secrets(inputs, self.passwords_path)
        return inputs

    def _up_one(self, backend: Any, spec: VmSpec, pub: str, recipe: Any, overrides: Mapping[str, Any],
                say: Progress, started: float, lock: threading.Lock) -> SandboxVm:
        with self._lock(f"vm-{spec.name}", f"sandbox VM {spec.name}", timeout=VM_LOCK_TIMEOUT,
                        progress=lambda who: say(spec.name, f"waiting for another run making it ({who})")):
            created = False  # a host the engine was still starting when interrupted it removes itself
            try:
                record, created, lost = self._host_for(backend, spec, pub, recipe, say, lock)
                return self._provision(record, created, lost, spec, recipe, overrides, say, started, lock)
            except KeyboardInterrupt:
                if created:  # interrupted while making it: nothing half-made stays
                    self.engine.down(record)
                raise

    def _provision(self, record: eng.Host, created: bool, lost: str, spec: VmSpec, recipe: Any,
                   overrides: Mapping[str, Any], say: Progress, started: float, lock: threading.Lock) -> SandboxVm:
        from polyvm.provisioners.fanout import run_recipe

        from . import host_of

        host = host_of(record, spec)
        inputs = self.recipe_inputs(recipe, host, record, overrides, lock) if recipe is not None else None
        say(spec.name, f"{'baseline and ' + recipe.name + ' recipe' if recipe else 'baseline'} on {record.guest_ip}")
        result = run_recipe([host], recipe, inputs, progress=False, source=record.host_ip,
                            credentials={"private_key_path": str(self.key_path),
                                         "known_hosts": str(self.known_hosts_path), "deadline": 60})
        (hr,) = result.hosts.values()
        vm = SandboxVm(name=spec.name, host_id=record.id, address=record.guest_ip, ssh_user=spec.ssh.user,
                       host_key=record.host_key, disks=host.data_disk_devices,
                       recipe=recipe.name if recipe is not None else "", created=created,
                       recipe_changes=[f"{r.name}: {r.detail or 'changed'}" for r in hr.results if r.changed],
                       note=lost)
        if recipe is None:
            say(spec.name, "ready")
            return vm
        vm.outputs = recipe.outputs(inputs, host)
        files = {}
        for fname, remote in recipe.client_files(inputs, host).items():
            # Public files a client needs (a CA certificate), next to the sandbox's state.
            local = self.dir / f"{spec.name}-{fname}"
            local.write_text(self.engine.exec(record, ["cat", remote]).stdout)
            local.chmod(0o644)
            files[fname] = str(local)
        vm.outputs = recipe.localize(vm.outputs, files)
        ports = recipe.ports(inputs)
        self.engine.set_labels(record, {**record.labels, PORTS_LABEL: ",".join(str(p) for p in ports)})
        closed = [p for p in ports if not _allows(spec, p, record.host_ip)]
        if closed:
            vm.note += ("; " if vm.note else "") + (
                f"not used from this machine: the spec's ingress does not open {', '.join(map(str, closed))} "
                f"to {record.host_ip}")
        else:
            say(spec.name, f"using the {recipe.name} service from this machine")
            vm.checked = recipe.check(inputs, host)
            if vm.checked:
                vm.login_seconds = time.monotonic() - started
        say(spec.name, "ready")
        return vm

    # --- verify -----------------------------------------------------------------------------------------
    def verify(self, specs: Sequence[VmSpec] | None = None, *, recipe: str = DEFAULT_RECIPE,
               inputs: Mapping[str, Any] | None = None, tls_days: int = 30) -> dict[str, list[Any]]:
        """Each sandbox VM's drift from what ``up`` (same specs, recipe and inputs) would make it, changing
        nothing (``Recipe.drift``; the generated secrets are read, never made). VM name -> list of Drift."""
        from polyvm.plugins import get_recipe
        from polyvm.recipe import Recipe

        from . import host_of

        the_recipe = get_recipe(recipe)
        if type(the_recipe).drift is Recipe.drift:
            from polyvm.errors import ConfigError

            raise ConfigError(f"recipe {the_recipe.name!r} has no drift check")
        if specs is None:
            specs = [self.default_spec(the_recipe, inputs)]
        by_name = {h.labels.get(LABEL): h for h in self.hosts()}
        out: dict[str, list[Any]] = {}
        for spec in specs:
            names = [n for n in by_name if n == spec.name or (n or "").startswith(spec.name + "-")]
            if not names:
                raise SandboxError(f"no sandbox VM {spec.name!r} (polyvm sandbox up first)")
            for name in sorted(names):
                record = by_name[name]
                host = host_of(record, spec.model_copy(update={"name": name}))
                data = {**the_recipe.sandbox_inputs(host, record.host_ip), **(inputs or {})}
                parsed = the_recipe.parse_inputs(the_recipe.defaults_for(host, data),
                                                 source=f"sandbox {the_recipe.name} inputs")
                parsed = the_recipe.with_secrets(parsed, self.passwords())
                conn = host.connect(private_key_path=str(self.key_path), known_hosts=str(self.known_hosts_path),
                                    deadline=60)
                with conn:
                    out[name] = the_recipe.drift(parsed, host, conn, tls_days=tls_days) or []
        return out

    # --- down -------------------------------------------------------------------------------------------
    def down(self, names: Sequence[str] = ()) -> list[eng.Host]:
        """Remove the named sandbox VMs (all of them without names), also crashed or half-made ones.
        With none left, the sandbox's files go too (key, passwords, known_hosts)."""
        self._require_root()
        from .loadbalancer import LocalLoadBalancer

        hosts = self.hosts() if self.state_dir.exists() else []
        # A fleet's name (sandbox up --load-balancer) names its load balancer and its members.
        fleets = {lb.record.fleet for lb in LocalLoadBalancer.list(self.engine)}
        if names:
            unknown = [n for n in names if n not in fleets
                       and not any(n in (h.labels.get(LABEL), h.id, h.name) for h in hosts)]
            if unknown:
                raise ConfigError(f"no sandbox VM named {', '.join(unknown)} (see polyvm sandbox status)")
            hosts = [h for h in hosts if {h.labels.get(LABEL), h.id, h.name, h.labels.get(FLEET_TAG)} & set(names)]
        for fleet in fleets:
            if not names or fleet in names:
                LocalLoadBalancer.down_all(self.engine, fleet=fleet)
        for h in hosts:
            name = h.labels.get(LABEL, h.name)
            with self._lock(f"vm-{name}", f"sandbox VM {name}", timeout=VM_LOCK_TIMEOUT):
                self.engine.down(h)
        if not self.hosts():
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                self.state_dir.rmdir()  # only when empty: other (Pulumi-managed) hosts keep it
                if self.state_dir == Path("/var/lib/polyvm/local"):
                    self.state_dir.parent.rmdir()  # /var/lib/polyvm, when nothing else is in it
            except OSError:
                pass
        else:
            self._write_known_hosts()
        return hosts

    # --- status / ssh -------------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        if not self.state_dir.exists():
            return []
        out = []
        for h in self.hosts():
            running = self.engine.is_running(h)
            out.append({
                "name": h.labels.get(LABEL, h.name), "host_id": h.id, "address": h.guest_ip,
                "running": running,
                "sshd": running and self.engine.sshd_listening(h),
                "recipe": h.labels.get(RECIPE_LABEL, ""),
                "service": running and _answers(h.guest_ip, h.labels.get(PORTS_LABEL, "")),
                "disks": list(h.disks), "ssh_user": h.user, "host_key": h.host_key,
                "age_seconds": round(time.time() - h.created, 1),
            })
        return out

    def ssh_argv(self, name: str, command: Sequence[str] = ()) -> list[str]:
        host = self.find(name)
        if host is None:
            raise ConfigError(f"no sandbox VM named {name!r} (see polyvm sandbox status)")
        if not self.engine.is_running(host):
            raise SandboxError(f"sandbox VM {name!r} is not running; `polyvm sandbox up` replaces it")
        self._write_known_hosts()
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SandboxError("ssh client not found: apt-get install -y openssh-client")
        return [ssh, "-i", str(self.key_path), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
                f"{host.user}@{host.guest_ip}", *command]


def _allows(spec: VmSpec, port: int, source: Any) -> bool:
    """Whether some TCP ingress rule of ``spec`` opens ``port`` to all of ``source`` (address or network)."""
    import ipaddress

    src = ipaddress.ip_network(str(source))
    for rule in spec.ingress:
        if rule.covers(port):
            for cidr in rule.cidrs:
                net = ipaddress.ip_network(cidr)
                if net.version == src.version and src.subnet_of(net):  # type: ignore[arg-type]
                    return True
    return False


def _answers(address: str, ports: str, timeout: float = 1.0) -> bool | None:
    """Whether every recorded service port accepts a TCP connection from this machine (None: no ports)."""
    wanted = [int(p) for p in ports.split(",") if p.strip().isdigit()]
    if not wanted:
        return None
    for port in wanted:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                pass
        except OSError:
            return False
    return True


def _placeholder() -> Any:
    from polyvm.host import Host

    return Host(address="198.19.0.2", user="root")


def _ports_only(recipe: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Enough of ``inputs`` to learn the recipe's ports (and check them) before a host exists (required
    fields filled by the recipe's own sandbox defaults for a placeholder host)."""
    return {**recipe.sandbox_inputs(_placeholder(), "198.19.0.1"), **inputs}


def load_inputs(path: str | None) -> dict[str, Any]:
    """A recipe's input overrides from a YAML file (empty without one)."""
    from polyvm.provisioners.cli import load_inputs_file

    return load_inputs_file(path)


def json_dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
