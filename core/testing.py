"""The backend contract suite, shipped as a pytest plugin (entry point ``pytest11: polyvm_contract``).

Every backend, built-in or third-party, runs the same tests under Pulumi's mock runtime (no cloud, no
credentials) with one class in its own test suite::

    from polyvm.testing import BackendContract
    from my_polyvm_backend import MyBackend

    class TestMyBackend(BackendContract):
        backend = MyBackend()
        settings = {"project": "demo"}   # optional: what Pulumi config polyvm:<name> would hold

The sample specs are derived from the backend's declared :class:`~polyvm.backend.Capabilities`: every
feature it claims is exercised, every feature it lacks must be rejected with an
:class:`~polyvm.errors.UnsupportedFeatureError` naming the backend and the option, before any resource
is declared. The backend reads its plan back through ``Backend.planned_ingress/planned_egress/
planned_disks/planned_tags`` so the contract can compare the declared firewall, disks and tags with
the spec.

Importing this module is cheap (it runs in every pytest session where polyvm is installed): Pulumi and
cryptography are imported only when a contract test runs; no cloud SDK is ever imported here.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import pytest

from .backend import OUTPUT_NAMES, Backend, BackendSettings, Capabilities, FirewallRule, spec_ingress_rules
from .errors import MissingDependencyError, SpecError, UnsupportedFeatureError
from .spec import DATABASE_PORTS, SSH_PORT, SUPPORTED_IMAGES, VmSpec, parse_spec

if TYPE_CHECKING:
    from .fleet import FleetSpec
    from .plan import Plan

__all__ = ["BackendContract", "contract_public_key", "find_in_clear", "plan_of", "polyvm_plan", "polyvm_public_key",
           "sample_spec_data"]

#: Addresses from the documentation ranges (RFC 5737/3849) and private space: never routable to anyone.
ADMIN_CIDR = "203.0.113.0/24"
ADMIN_CIDR6 = "2001:db8::/32"
APP_CIDR = "10.0.0.0/8"
_FAMILY_PREFERENCE = ("ubuntu", "debian", "rhel", "amazon-linux")


@functools.lru_cache(maxsize=1)
def contract_public_key() -> str:
    """A freshly generated ed25519 login public key (OpenSSH format), one per test session."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return pub.decode() + " polyvm-contract"


def _default_image(caps: Capabilities) -> dict[str, str]:
    for family in _FAMILY_PREFERENCE:
        if family in caps.os_families:
            return {"family": family, "version": SUPPORTED_IMAGES[family][0]}
    family = sorted(caps.os_families)[0]
    return {"family": family, "version": SUPPORTED_IMAGES[family][0]}


def sample_spec_data(caps: Capabilities, kind: str = "full", *, name: str | None = None,
                     region: str | None = None, zone: str | None = None) -> dict[str, Any]:
    """A standard sample spec (as plain data) using only what ``caps`` claims to support.

    kinds: ``minimal`` (no ingress, no disks), ``full`` (every supported ingress form, data disks, tags,
    region/zone when given), ``private`` (no public IP; only when the backend can do that).
    """
    data: dict[str, Any] = {
        "name": name or f"contract-{kind}",
        "size": {"cpus": 2, "memory_gb": 4},
        "image": _default_image(caps),
        "ssh": {"user": "polyvm", "public_key": contract_public_key()},
        "public_ip": caps.public_ip,
    }
    if kind == "private":
        data["public_ip"] = False
    if kind in ("full", "private"):
        admin = [ADMIN_CIDR] + ([ADMIN_CIDR6] if caps.ipv6_ingress else [])
        ingress: list[dict[str, Any]] = [
            {"protocol": "tcp", "port": SSH_PORT, "cidrs": admin, "description": "ssh from admins"},
            {"protocol": "tcp", "port": 5432, "cidrs": [APP_CIDR], "description": "postgres from apps"},
        ]
        if caps.port_ranges:
            ingress.append({"protocol": "tcp", "port": "8000-8100", "cidrs": [APP_CIDR]})
        if "udp" in caps.protocols:
            ingress.append({"protocol": "udp", "port": 51820, "cidrs": [ADMIN_CIDR]})
        if "icmp" in caps.protocols:
            ingress.append({"protocol": "icmp", "cidrs": admin})
        data["ingress"] = ingress
        ndisks = min(2, caps.max_data_disks)
        data["data_disks"] = [{"name": "data", "size_gb": 10, "mount_point": "/srv/data"},
                              {"name": "wal", "size_gb": 25}][:ndisks]
        if caps.tags:
            data["tags"] = {"env": "contract", "team": "data"}
        if region and caps.regions:
            data["region"] = region
        if zone and caps.zones:
            data["zone"] = zone
    return data


def plan_of(backend: Backend, specs: list[VmSpec], settings: Mapping[str, Any] | None, *,
            calls: Mapping[str, Any] | None = None) -> "Plan":
    from .plan import plan

    return plan(backend, specs, settings, backends=[backend], calls=calls)


def the_one(plan: "Plan", typ: str) -> Any:
    """The single planned resource of type ``typ`` (fails when there are none or several)."""
    found = plan.by_type(typ)
    assert len(found) == 1, f"expected exactly one {typ}, found {len(found)}"
    return found[0]


def unsecret(value: Any) -> Any:
    """The plain value of a Pulumi secret as the mock runtime records it; fails when it is not a secret."""
    from .plan import is_secret

    assert is_secret(value), f"expected a Pulumi secret, got {type(value).__name__}"
    return value["value"]


def find_in_clear(value: Any, marker: str, path: str = "") -> list[str]:
    """Paths in recorded resource inputs where ``marker`` appears outside a Pulumi secret."""
    from .plan import is_secret

    if isinstance(value, str):
        return [path or "(value)"] if marker in value else []
    if isinstance(value, Mapping):
        if is_secret(value):
            return []
        out = []
        for k, v in value.items():
            out += find_in_clear(v, marker, f"{path}.{k}" if path else str(k))
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for i, v in enumerate(value):
            out += find_in_clear(v, marker, f"{path}[{i}]")
        return out
    return []


def _covers(rule: FirewallRule, port: int) -> bool:
    proto, lo, hi, _cidr = rule
    if proto == "all":
        return True
    if proto != "tcp":
        return False
    return lo is not None and hi is not None and lo <= port <= hi


def _fmt(rules: set[FirewallRule]) -> str:
    return "\n".join(f"    {r}" for r in sorted(rules, key=repr)) or "    (none)"


class BackendContract:
    """Mix into a test class and set ``backend``; pytest collects the inherited ``test_*`` methods."""

    #: The backend under test (an instance).
    backend: ClassVar[Backend]
    #: What Pulumi config ``polyvm:<name>`` holds for the plans (validated by the backend's settings model).
    settings: ClassVar[Mapping[str, Any] | None] = None
    #: Region/zone used in the full sample spec, when the backend supports them (e.g. "eastus", "eu-west-1a").
    region: ClassVar[str | None] = None
    zone: ClassVar[str | None] = None
    #: Values used to probe the per-backend overrides.
    instance_type_override: ClassVar[str] = "contract-instance-type"
    image_id_override: ClassVar[str] = "contract-image-id"
    #: Backend-specific limits beyond the capabilities: (patch merged into the full sample spec,
    #: text the error must contain). Each must be rejected before anything is declared.
    extra_unsupported: ClassVar[tuple[tuple[dict[str, Any], str], ...]] = ()
    #: Settings for the fleet plans (a load balancer may need the network its members share); default:
    #: ``settings``.
    fleet_settings: ClassVar[Mapping[str, Any] | None] = None

    # --- helpers (prefixed contract_ so a backend's own test class can use any other name) ---------------
    @classmethod
    def _cache(cls) -> dict[str, Any]:
        if "_contract_cache" not in cls.__dict__:
            cls._contract_cache = {}  # type: ignore[attr-defined]
        return cls.__dict__["_contract_cache"]

    @property
    def contract_caps(self) -> Capabilities:
        return self.backend.capabilities

    def contract_spec(self, kind: str = "full", **patch: Any) -> VmSpec:
        data = sample_spec_data(self.contract_caps, kind, region=self.region, zone=self.zone)
        data.update(patch)
        return parse_spec(data)

    def contract_sample_kinds(self) -> list[str]:
        kinds = ["minimal", "full"]
        if self.contract_caps.private_ip_only and self.contract_caps.public_ip:
            kinds.append("private")
        return kinds

    def contract_plan(self, kind: str) -> tuple[VmSpec, "Plan"]:
        cache = self._cache()
        if kind not in cache:
            spec = self.contract_spec(kind)
            cache[kind] = (spec, plan_of(self.backend, [spec], self.settings))
        return cache[kind]

    def contract_plans(self) -> list[tuple[str, VmSpec, "Plan"]]:
        return [(k, *self.contract_plan(k)) for k in self.contract_sample_kinds()]

    def _component(self, plan: "Plan", spec: VmSpec):
        token = f"polyvm:{self.backend.name}:VirtualMachine"
        comps = plan.by_type(token)
        assert len(comps) == 1, f"expected exactly one {token}, found {len(comps)}"
        assert comps[0].name == spec.name, f"the component is named {comps[0].name!r}, not the VM name {spec.name!r}"
        return comps[0]

    def _declare_expecting_rejection(self, spec: VmSpec, settings: Any = None) -> SpecError:
        """Run the program under mocks; return the SpecError it raised, and check nothing was declared."""
        from .plan import run_mocked
        from .program import declare

        def program() -> Any:
            try:
                declare(self.backend, [spec], self.settings if settings is None else settings, export=False)
            except SpecError as exc:
                return exc
            return None

        err, _mocks, monitor = run_mocked(program, [self.backend])
        assert err is not None, "the spec was accepted"
        assert not monitor.registered, (
            "resources were declared before the spec was rejected: "
            + ", ".join(f"{t} {n}" for _u, _p, t, n, _c in monitor.registered))
        return err

    # --- the backend's declarations --------------------------------------------------------------------
    def test_declaration(self) -> None:
        be = self.backend
        assert isinstance(be, Backend)
        assert isinstance(be.name, str) and be.name.replace("-", "").isalnum() and be.name == be.name.lower(), \
            f"backend name {be.name!r} must be lowercase letters, digits and '-'"
        assert be.description, "the backend needs a one-line description (shown by `polyvm backends`)"
        assert isinstance(be.capabilities, Capabilities)
        assert be.capabilities.egress.strip(), "capabilities.egress must say what outbound traffic is allowed"
        assert be.capabilities.os_families, "the backend must support at least one OS family"
        assert issubclass(be.settings_model, BackendSettings)
        if be.sdk_modules:
            assert be.extra, "a backend with sdk_modules must name the extra that installs them"
        for rule in be.egress_rules:
            assert len(rule) == 4 and rule[0] in ("tcp", "udp", "icmp", "all"), f"bad egress rule {rule!r}"

    def test_importing_backend_does_not_import_sdk(self) -> None:
        module = type(self.backend).__module__
        sdks = [m for m in self.backend.sdk_modules]
        code = ("import sys, importlib; importlib.import_module(%r); "
                "print(sorted(m for m in %r if m in sys.modules))" % (module, sdks))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"importing {module} failed:\n{out.stderr[-2000:]}"
        assert out.stdout.strip() == "[]", f"importing {module} imported its SDK {out.stdout.strip()}; " \
                                           "import it inside the backend only when declaring"

    def test_missing_sdk_gives_install_hint(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if not self.backend.sdk_modules:
            assert self.backend.require_sdk() == {}
            return
        for mod in self.backend.sdk_modules:
            monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` raise ImportError
        with pytest.raises(MissingDependencyError) as info:
            self.backend.declare(self.contract_spec("minimal"), self.settings)
        assert f"pip install 'polyvm[{self.backend.extra}]'" in str(info.value)

    def test_unknown_setting_is_rejected(self) -> None:
        bad = {**dict(self.settings or {}), "no_such_option": 1}
        with pytest.raises(SpecError) as info:
            self.backend.parse_settings(bad)
        assert f"polyvm:{self.backend.name}.no_such_option" in str(info.value)
        err = self._declare_expecting_rejection(self.contract_spec("minimal"), settings=bad)
        assert "no_such_option" in str(err)

    # --- the component tree ----------------------------------------------------------------------------
    def test_exactly_one_component_and_everything_under_it(self) -> None:
        for kind, spec, plan in self.contract_plans():
            comp = self._component(plan, spec)
            assert comp.parent is None, f"[{kind}] the component must be a root of the stack"
            by_urn = {r.urn: r for r in plan.resources}
            for res in plan.resources:
                if res is comp:
                    continue
                chain, cur = [], res
                while cur.parent is not None and cur.parent in by_urn and cur.urn not in chain:
                    chain.append(cur.urn)
                    cur = by_urn[cur.parent]
                assert cur is comp, f"[{kind}] {res.type} {res.name} is not a descendant of the component"
            assert any(r.custom for r in plan.resources), f"[{kind}] the plan declares no cloud resource"

    def test_two_vms_in_one_stack(self) -> None:
        a = parse_spec(sample_spec_data(self.contract_caps, "full", name="contract-a", region=self.region, zone=self.zone))
        b = parse_spec(sample_spec_data(self.contract_caps, "full", name="contract-b", region=self.region, zone=self.zone))
        plan = plan_of(self.backend, [a, b], self.settings)
        token = f"polyvm:{self.backend.name}:VirtualMachine"
        assert sorted(r.name for r in plan.by_type(token)) == ["contract-a", "contract-b"]
        urns = [r.urn for r in plan.resources]
        assert len(urns) == len(set(urns)), "two VMs in one stack declare resources with the same name"
        assert set(plan.outputs) == {"contract-a", "contract-b"}

    # --- outputs ---------------------------------------------------------------------------------------
    def test_outputs(self) -> None:
        for kind, spec, plan in self.contract_plans():
            outs = plan.outputs.get(spec.name)
            assert outs is not None, f"[{kind}] no outputs for {spec.name}"
            missing = [k for k in OUTPUT_NAMES if k not in outs]
            assert not missing, f"[{kind}] outputs missing: {missing}"
            if spec.public_ip:
                assert outs["public_ip"], f"[{kind}] public_ip is empty although the spec asks for one"
                ipaddress.ip_address(outs["public_ip"])
            else:
                assert outs["public_ip"] is None, f"[{kind}] public_ip must be None for a private VM"
            assert outs["private_ip"], f"[{kind}] private_ip is empty"
            ipaddress.ip_address(outs["private_ip"])
            assert outs["ssh_user"] == spec.ssh.user
            if self.contract_caps.host_key_at_creation:
                hk = outs["host_key"]
                assert isinstance(hk, str) and hk.startswith("ssh-") and len(hk.split()) >= 2, \
                    f"[{kind}] host_key must be an OpenSSH public key when host_key_at_creation, got {hk!r}"
            devices = outs["data_disk_devices"] or {}
            assert sorted(devices) == sorted(d.name for d in spec.data_disks), \
                f"[{kind}] data_disk_devices keys {sorted(devices)} != data disk names"
            paths = list(devices.values())
            assert all(isinstance(p, str) and p.startswith("/dev/") for p in paths), \
                f"[{kind}] data disk device paths must be /dev/... paths: {paths}"
            assert len(set(paths)) == len(paths), f"[{kind}] two data disks share a device path: {paths}"

    # --- firewall ----------------------------------------------------------------------------------------
    def test_ingress_is_exactly_the_spec(self) -> None:
        for kind, spec, plan in self.contract_plans():
            want = spec_ingress_rules(spec)
            got = set(self.backend.planned_ingress(plan))
            assert got == want, (f"[{kind}] planned ingress differs from the spec\n  extra:\n{_fmt(got - want)}"
                                 f"\n  missing:\n{_fmt(want - got)}")

    def test_egress_is_as_documented(self) -> None:
        for kind, _spec, plan in self.contract_plans():
            got = set(self.backend.planned_egress(plan))
            assert got == set(self.backend.egress_rules), (
                f"[{kind}] planned egress differs from the documented egress_rules "
                f"({self.contract_caps.egress})\n  planned:\n{_fmt(got)}\n  documented:\n{_fmt(set(self.backend.egress_rules))}")

    def test_no_world_open_ssh_or_database_by_default(self) -> None:
        for kind, _spec, plan in self.contract_plans():
            for rule in self.backend.planned_ingress(plan):
                if ipaddress.ip_network(rule[3]).prefixlen == 0:
                    for port in (SSH_PORT, *DATABASE_PORTS):
                        assert not _covers(rule, port), f"[{kind}] port {port} is open to the world: {rule}"

    def test_world_open_ssh_only_with_allow_public(self) -> None:
        rule = {"protocol": "tcp", "port": 22, "cidrs": ["0.0.0.0/0"], "allow_public": True}
        spec = self.contract_spec("minimal", ingress=[rule])
        plan = plan_of(self.backend, [spec], self.settings)
        assert set(self.backend.planned_ingress(plan)) == {("tcp", 22, 22, "0.0.0.0/0")}

    # --- disks, tags, secrets --------------------------------------------------------------------------
    def test_data_disks(self) -> None:
        for kind, spec, plan in self.contract_plans():
            want = {d.name: d.size_gb for d in spec.data_disks}
            got = dict(self.backend.planned_disks(plan))
            assert got == want, f"[{kind}] planned data disks {got} differ from the spec's {want}"

    def test_tags_applied(self) -> None:
        if not self.contract_caps.tags:
            with pytest.raises(UnsupportedFeatureError, match="tags"):
                self.backend.check(self.contract_spec("minimal", tags={"env": "contract"}))
            return
        _k, spec, plan = self.contract_plans()[1]  # the full spec carries tags
        got = self.backend.planned_tags(plan)
        missing = {k: v for k, v in spec.tags.items() if got.get(k) != v}
        assert not missing, f"tags not applied to the VM: {missing} (planned: {got})"
        assert got.get("managed-by") == "polyvm", f"the VM lacks the managed-by=polyvm tag (planned: {got})"

    def test_no_private_key_or_user_data_in_clear(self) -> None:
        for kind, _spec, plan in self.contract_plans():
            for res in plan.resources:
                for marker in ("PRIVATE KEY", "#cloud-config"):
                    leaks = find_in_clear(res.inputs, marker)
                    assert not leaks, f"[{kind}] {res.type} {res.name}: {marker!r} in clear at {leaks}"

    # --- the cloud's rules, replacements and data safety ----------------------------------------------------
    def test_limits_and_replacements_are_declared_with_sources(self) -> None:
        be = self.backend
        for limit in be.limits:
            assert limit.field and limit.rule and limit.source, f"limit {limit!r} needs a field, a rule and a source"
        for rep in be.replacements:
            assert rep.source, f"the replacement rule of {rep.type} needs its source (the provider schema)"
        from .backend import CORE_REPLACEMENTS

        declared = {rep.type for rep in (*be.replacements, *CORE_REPLACEMENTS)}
        for kind, _spec, plan in self.contract_plans():
            missing = sorted({r.type for r in plan.resources if r.custom} - declared)
            assert not missing, (f"[{kind}] no replacement rule (inputs forcing a new resource) declared for "
                                 f"{missing}; add Replacement entries to {type(be).__name__}.replacements")

    def contract_require_durable(self) -> None:
        if not self.contract_caps.durable_data_disks:
            pytest.skip(f"backend {self.backend.name!r} declares durable_data_disks=False (disposable hosts)")

    def test_data_disks_are_protected(self) -> None:
        self.contract_require_durable()
        spec, plan = self.contract_plan("full")
        if not spec.data_disks:
            return
        holders = [r for r in plan.resources if r.custom and self.backend.holds_data(r.type, r.inputs)]
        assert holders, ("no resource of the plan is declared to hold the data disks: set data_disk_types "
                         "(or override holds_data) so replacements and deletions of them are flagged")
        for r in holders:
            assert r.options.get("protect") and r.options.get("retain_on_delete"), (
                f"{r.type} {r.name} holds a data disk but is not protected and retained on delete "
                f"(options: {r.options})")
        settings = {**dict(self.settings or {}), "protect_data_disks": False}
        off = plan_of(self.backend, [spec], settings)
        still = [f"{r.type} {r.name}" for r in off.resources if r.custom and r.options.get("protect")
                 and self.backend.holds_data(r.type, r.inputs)]
        assert not still, f"protect_data_disks: false must lift the protection: {still}"

    def contract_changes(self) -> list[tuple[str, VmSpec, Mapping[str, Any] | None, Mapping[str, Any] | None]]:
        """(label, changed spec, settings, invoke overrides) for the everyday changes that must never
        replace a data disk."""
        base = sample_spec_data(self.contract_caps, "full", region=self.region, zone=self.zone)
        out: list[tuple[str, VmSpec, Mapping[str, Any] | None, Mapping[str, Any] | None]] = []

        def variant(label: str, settings: Mapping[str, Any] | None = None, calls: Any = None, **patch: Any) -> None:
            out.append((label, parse_spec({**base, **patch}), self.settings if settings is None else settings, calls))

        if self.contract_caps.tags:
            variant("tags", tags={**base.get("tags", {}), "env": "changed", "owner": "ops"})
        ingress = [dict(r) for r in base.get("ingress", [])]
        if ingress:
            ingress[0]["cidrs"] = ["198.51.100.0/24"]
        variant("ingress", ingress=ingress + [{"protocol": "tcp", "port": 443, "cidrs": [APP_CIDR]}])
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        other = Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        variant("login key", ssh={**base["ssh"], "public_key": other + " rotated"})
        variant("size", size={"cpus": 4, "memory_gb": 16})
        if self.backend.newer_image_calls:
            variant("newer image", calls=self.backend.newer_image_calls)
        renamed = f"{base['name']}-renamed"
        variant("rename", settings={**dict(self.settings or {}), "renamed": {renamed: base["name"]}}, name=renamed)
        return out

    def test_everyday_changes_never_lose_a_data_disk(self) -> None:
        from .plan import diff

        self.contract_require_durable()
        _spec, base = self.contract_plan("full")
        failures = []
        for label, spec, settings, calls in self.contract_changes():
            new = plan_of(self.backend, [spec], settings, calls=calls)
            lost = [f"{c.action} {c.type} {c.name} [{', '.join(c.inputs)}]" for c in diff(self.backend, base, new)
                    if c.data_loss]
            if lost:
                failures.append(f"{label}: " + "; ".join(lost))
        assert not failures, "everyday spec changes would replace or delete a data disk:\n" + "\n".join(failures)

    def test_removing_a_vm_is_flagged_as_data_loss(self) -> None:
        """The comparison is not blind: a plan without the VM deletes its data disks, and says so."""
        from .plan import diff

        spec, base = self.contract_plan("full")
        if not spec.data_disks:
            return
        other = parse_spec(sample_spec_data(self.contract_caps, "minimal", name="contract-other"))
        changes = diff(self.backend, base, plan_of(self.backend, [other], self.settings))
        assert any(c.data_loss for c in changes), "deleting the VM and its data disks is not flagged as data loss"

    # --- what the backend cannot do ------------------------------------------------------------------------
    def contract_unsupported_probes(self) -> list[tuple[str, dict[str, Any], str]]:
        """(label, patch to the full sample spec, text the error must name) for each lacking capability."""
        caps, name = self.contract_caps, self.backend.name
        probes: list[tuple[str, dict[str, Any], str]] = []
        for family, versions in SUPPORTED_IMAGES.items():
            if family not in caps.os_families:
                probes.append((f"os {family}", {"image": {"family": family, "version": versions[0]}},
                               "image.family"))
        if caps.max_data_disks < 64:
            disks = [{"name": f"d{i}", "size_gb": 1} for i in range(caps.max_data_disks + 1)]
            probes.append(("too many data disks", {"data_disks": disks}, "data_disks"))
        if not caps.private_ip_only:
            probes.append(("private VM", {"public_ip": False}, "public_ip"))
        if not caps.public_ip:
            probes.append(("public IP", {"public_ip": True}, "public_ip"))
        for proto in ("udp", "icmp"):
            if proto not in caps.protocols:
                rule = {"protocol": proto, "cidrs": [ADMIN_CIDR], **({"port": 53} if proto == "udp" else {})}
                probes.append((f"{proto} ingress", {"ingress": [rule]}, "protocol"))
        if not caps.ipv6_ingress:
            probes.append(("IPv6 ingress", {"ingress": [{"port": 22, "cidrs": [ADMIN_CIDR6]}]}, "IPv6"))
        if not caps.port_ranges:
            probes.append(("port range", {"ingress": [{"port": "8000-8100", "cidrs": [APP_CIDR]}]}, "port range"))
        if not caps.instance_type_override:
            probes.append(("instance type", {"size": {"cpus": 2, "memory_gb": 4, "instance_type":
                                                      {name: self.instance_type_override}}}, "size.instance_type"))
        if not caps.image_id_override:
            image = {**_default_image(caps), "image_id": {name: self.image_id_override}}
            probes.append(("image id", {"image": image}, "image.image_id"))
        if not caps.regions:
            probes.append(("region", {"region": "contract-region-1"}, "region"))
        if not caps.zones:
            probes.append(("zone", {"zone": "contract-zone-1a"}, "zone"))
        if not caps.tags:
            probes.append(("tags", {"tags": {"env": "contract"}}, "tags"))
        for i, (patch, text) in enumerate(self.extra_unsupported):
            probes.append((f"extra_unsupported[{i}]", patch, text))
        return probes

    def test_unsupported_options_are_rejected(self) -> None:
        failures = []
        for label, patch, text in self.contract_unsupported_probes():
            spec = self.contract_spec("full", **patch)
            try:
                self.backend.check(spec)
            except UnsupportedFeatureError as exc:
                direct: Exception | None = exc
            else:
                direct = None
            try:
                err = self._declare_expecting_rejection(spec)
            except AssertionError as exc:
                failures.append(f"{label}: {exc}")
                continue
            msg = str(err)
            if f"backend {self.backend.name!r}" not in msg or text not in msg:
                failures.append(f"{label}: the error must name backend {self.backend.name!r} and {text!r}: {msg}")
            if direct is None:
                failures.append(f"{label}: Backend.check() accepted the spec (`polyvm validate --backend` "
                                "would too); report it from Backend.unsupported()")
            elif text not in str(direct):
                failures.append(f"{label}: Backend.check() must name {text!r}: {direct}")
        assert not failures, "unsupported options not rejected properly:\n" + "\n".join(failures)

    def test_supported_options_plan(self) -> None:
        """Everything the capabilities claim works: every OS family/version, overrides, max data disks."""
        caps, name = self.contract_caps, self.backend.name
        variants: list[tuple[str, dict[str, Any]]] = []
        for family in sorted(caps.os_families):
            for version in SUPPORTED_IMAGES[family]:
                variants.append((f"{family} {version}", {"image": {"family": family, "version": version}}))
        if caps.instance_type_override:
            variants.append(("instance type override", {"size": {"cpus": 2, "memory_gb": 4, "instance_type":
                                                                 {name: self.instance_type_override}}}))
        if caps.image_id_override:
            variants.append(("image id override",
                             {"image": {**_default_image(caps), "image_id": {name: self.image_id_override}}}))
        if 0 < caps.max_data_disks <= 64:
            variants.append(("max data disks", {"data_disks": [{"name": f"d{i}", "size_gb": 10 + i}
                                                               for i in range(caps.max_data_disks)]}))
        for size in ({"cpus": 1, "memory_gb": 0.5}, {"cpus": 8, "memory_gb": 32}):
            variants.append((f"size {size}", {"size": size}))
        failures = []
        for label, patch in variants:
            spec = self.contract_spec("full", **patch)
            try:
                plan = plan_of(self.backend, [spec], self.settings)
                self._component(plan, spec)
                assert dict(self.backend.planned_disks(plan)) == {d.name: d.size_gb for d in spec.data_disks}
            except Exception as exc:  # noqa: BLE001 - collect every failing variant
                failures.append(f"{label}: {type(exc).__name__}: {exc}")
        assert not failures, "specs within the declared capabilities failed to plan:\n" + "\n".join(failures)


    # --- fleets (docs/fleets.md) ------------------------------------------------------------------------
    FLEET_NAME: ClassVar[str] = "contract-web"
    FLEET_PORT: ClassVar[int] = 80

    def contract_fleet(self, *, count: int = 3, load_balancer: bool = True) -> "FleetSpec":
        """A fleet of ``count`` full sample VMs (data disks, tags, ingress), with a load balancer every
        cloud's accepts: a tcp listener on the members' own port 80 (or the backend's first listener
        protocol), an http health check with equal thresholds and the default timeout."""
        from .fleet import parse_fleet

        vm = sample_spec_data(self.contract_caps, "full", region=self.region)
        vm.pop("name")
        data: dict[str, Any] = {"name": self.FLEET_NAME, "count": count, "vm": vm}
        if load_balancer:
            protocols = self.contract_caps.lb_protocols or frozenset({"tcp"})
            proto = "tcp" if "tcp" in protocols else sorted(protocols)[0]
            data["load_balancer"] = {
                "allowed_cidrs": [ADMIN_CIDR],
                "listeners": [{"protocol": proto, "port": self.FLEET_PORT}],
                "health_check": {"protocol": "http", "path": "/healthz", "interval_s": 10,
                                 "healthy_threshold": 3, "unhealthy_threshold": 3},
            }
        return parse_fleet(data)

    def contract_fleet_settings(self) -> Mapping[str, Any] | None:
        return self.fleet_settings if self.fleet_settings is not None else self.settings

    def contract_fleet_plan(self, *, count: int = 3, load_balancer: bool = True) -> tuple["FleetSpec", "Plan"]:
        from .plan import plan_fleet

        key = f"fleet-{count}-{load_balancer}"
        cache = self._cache()
        if key not in cache:
            fleet = self.contract_fleet(count=count, load_balancer=load_balancer)
            cache[key] = (fleet, plan_fleet(self.backend, fleet, self.contract_fleet_settings(), [self.backend]))
        return cache[key]

    def _fleet_component(self, plan: "Plan") -> Any:
        token = f"polyvm:{self.backend.name}:Fleet"
        comps = plan.by_type(token)
        assert len(comps) == 1, f"expected exactly one {token}, found {len(comps)}"
        assert comps[0].name == self.FLEET_NAME and comps[0].parent is None, \
            f"the fleet component must be a root named after the fleet, got {comps[0].name!r}"
        return comps[0]

    def contract_member_plan(self, plan: "Plan", member: str) -> "Plan":
        """The part of a fleet plan under one member's VirtualMachine component, as a Plan of one VM (so
        ``planned_ingress`` and friends read it as they read a single VM's)."""
        from .plan import Plan

        token = f"polyvm:{self.backend.name}:VirtualMachine"
        (vm,) = [r for r in plan.by_type(token) if r.name == member]
        by_urn = {r.urn: r for r in plan.resources}

        def under(res: Any) -> bool:
            cur = res
            while cur is not None:
                if cur.urn == vm.urn:
                    return True
                cur = by_urn.get(cur.parent) if cur.parent else None
            return False

        return Plan(backend=plan.backend, resources=[r for r in plan.resources if under(r)], calls=plan.calls,
                    outputs={member: plan.outputs[self.FLEET_NAME]["members"][member]})

    def _check_fleet_tree(self, fleet: "FleetSpec", plan: "Plan") -> Any:
        comp = self._fleet_component(plan)
        token = f"polyvm:{self.backend.name}:VirtualMachine"
        vms = plan.by_type(token)
        assert sorted(v.name for v in vms) == sorted(fleet.member_names), \
            f"members must be named {fleet.member_names}, got {sorted(v.name for v in vms)}"
        assert all(v.parent == comp.urn for v in vms), "every member must be a child of the fleet component"
        by_urn = {r.urn: r for r in plan.resources}
        for res in plan.resources:
            cur = res
            while cur.parent is not None and cur.parent in by_urn:
                cur = by_urn[cur.parent]
            assert cur is comp, f"{res.type} {res.name} is not a descendant of the fleet component"
        outs = plan.outputs[fleet.name]
        from .backend import FLEET_OUTPUT_NAMES

        assert sorted(outs) == sorted(FLEET_OUTPUT_NAMES), f"fleet outputs {sorted(outs)} != {sorted(FLEET_OUTPUT_NAMES)}"
        assert sorted(outs["members"]) == fleet.member_names
        for name, member_outs in outs["members"].items():
            missing = [k for k in OUTPUT_NAMES if k not in member_outs]
            assert not missing, f"member {name} lacks the VM outputs {missing}"
        return comp

    def test_fleet_without_load_balancer_is_its_members(self) -> None:
        fleet, plan = self.contract_fleet_plan(load_balancer=False)
        comp = self._check_fleet_tree(fleet, plan)
        direct = [r for r in plan.children_of(comp) if r.custom]
        assert not direct, f"a fleet without load balancer declares {[(r.type, r.name) for r in direct]} beside its members"
        for spec in fleet.member_specs():
            got = set(self.backend.planned_ingress(self.contract_member_plan(plan, spec.name)))
            want = spec_ingress_rules(spec)
            assert got == want, (f"{spec.name}: planned ingress differs from the member spec\n  extra:\n"
                                 f"{_fmt(got - want)}\n  missing:\n{_fmt(want - got)}")
            assert self.backend.planned_disks(self.contract_member_plan(plan, spec.name)) == \
                {d.name: d.size_gb for d in spec.data_disks}

    def test_fleet_with_load_balancer_plans_or_is_refused_clearly(self) -> None:
        """Either the load balancer's resources are declared (children of the fleet, beside the members,
        with an address or DNS name as output) and each member admits exactly its VM's ingress plus the
        load balancer's sources on the target and health-check ports; or the backend refuses the load
        balancer before anything is declared, naming itself and ``load_balancer``."""
        from .plan import run_mocked
        from .program import declare_fleet

        fleet = self.contract_fleet()
        settings = self.contract_fleet_settings()

        def program() -> Any:
            try:
                declare_fleet(self.backend, fleet, settings, export=False)
            except SpecError as exc:
                return exc
            return None

        err, _mocks, monitor = run_mocked(program, [self.backend])
        if err is not None:
            assert not monitor.registered, "resources were declared before the fleet was refused: " + ", ".join(
                f"{t} {n}" for _u, _p, t, n, _c in monitor.registered)
            msg = str(err)
            if all(pr.startswith(f"polyvm:{self.backend.name}.") for pr in err.problems):
                pytest.skip(f"the load balancer needs settings: set fleet_settings on the contract class ({msg})")
            assert f"backend {self.backend.name!r}" in msg and "load_balancer" in msg, (
                f"a refused load balancer must be named with the backend (or the fleet_settings it needs "
                f"set on the contract class): {msg}")
            return
        _fleet, plan = self.contract_fleet_plan()
        comp = self._check_fleet_tree(fleet, plan)
        lb_resources = [r for r in plan.children_of(comp) if r.custom]
        assert lb_resources, "a fleet with a load balancer declares no load balancer resource beside its members"
        outs = plan.outputs[fleet.name]
        assert outs["lb_addresses"] or outs["lb_dns_name"], "the fleet has neither lb_addresses nor lb_dns_name"
        for a in outs["lb_addresses"] or []:
            ipaddress.ip_address(a)
        parsed = self.backend.parse_settings(settings)
        sources = self.backend.fleet_sources(fleet, parsed)
        lb = fleet.load_balancer
        assert lb is not None
        lb_ports = set(lb.target_ports) | {lb.health_port}
        allowed = set(sources.traffic + sources.health_checks) if sources is not None else set()
        for spec in fleet.member_specs(sources):
            vm_rules = spec_ingress_rules(fleet.vm)
            got = set(self.backend.planned_ingress(self.contract_member_plan(plan, spec.name)))
            want = spec_ingress_rules(spec)
            assert got == want, (f"{spec.name}: planned ingress differs from the member spec\n  extra:\n"
                                 f"{_fmt(got - want)}\n  missing:\n{_fmt(want - got)}")
            for rule in got - vm_rules:
                proto, lo, hi, cidr = rule
                assert proto == "tcp" and lo == hi and lo in lb_ports and cidr in allowed, (
                    f"{spec.name}: {rule} is opened for the load balancer but is not a target or health-check "
                    f"port {sorted(lb_ports)} from its sources {sorted(allowed)}")
                # allowed_cidrs is ADMIN_CIDR: nothing the load balancer needs may be open to the world.
                assert ipaddress.ip_network(cidr).prefixlen > 0, (
                    f"{spec.name}: {rule} opens a member port to the world although only {lb.allowed_cidrs} "
                    "may reach the load balancer")

    def test_fleet_member_names_are_stable(self) -> None:
        """Growing a fleet from 3 to 4 members only creates: no member's resource is renamed, replaced
        or deleted (members are <fleet>-<index>, not positions in a list that shifts)."""
        from .plan import CREATE, diff

        _f3, three = self.contract_fleet_plan(load_balancer=False)
        _f4, four = self.contract_fleet_plan(count=4, load_balancer=False)
        changes = [c for c in diff(self.backend, three, four) if c.action != CREATE]
        assert not changes, "adding a member changes the others: " + "; ".join(
            f"{c.action} {c.type} {c.name}" for c in changes)
        created = {c.name for c in diff(self.backend, three, four)}
        assert created and all(f"{self.FLEET_NAME}-3" in n for n in created), \
            f"adding member {self.FLEET_NAME}-3 creates {sorted(created)}"

    def test_fleet_member_data_disks_are_protected(self) -> None:
        self.contract_require_durable()
        fleet, plan = self.contract_fleet_plan(load_balancer=False)
        if not fleet.vm.data_disks:
            return
        for name in fleet.member_names:
            holders = [r for r in self.contract_member_plan(plan, name).resources
                       if r.custom and self.backend.holds_data(r.type, r.inputs)]
            assert holders, f"{name}: no resource holds the member's data disks"
            for r in holders:
                assert r.options.get("protect") and r.options.get("retain_on_delete"), (
                    f"{name}: {r.type} {r.name} holds a data disk but is not protected and retained on delete")

    def test_fleet_resources_have_replacement_rules(self) -> None:
        from .backend import CORE_REPLACEMENTS

        declared = {rep.type for rep in (*self.backend.replacements, *CORE_REPLACEMENTS)}
        for lb in (False, True):
            try:
                _fleet, plan = self.contract_fleet_plan(load_balancer=lb)
            except SpecError:
                continue  # a refused load balancer: test_fleet_with_load_balancer_plans_or_is_refused_clearly
            missing = sorted({r.type for r in plan.resources if r.custom} - declared)
            assert not missing, (f"no replacement rule declared for the fleet's {missing}; add Replacement "
                                 f"entries to {type(self.backend).__name__}.replacements")


# --- fixtures for a backend's own tests (available wherever polyvm is installed) --------------------------
@pytest.fixture
def polyvm_public_key() -> str:
    """A generated ed25519 login public key (OpenSSH format) for sample specs."""
    return contract_public_key()


@pytest.fixture
def polyvm_plan():
    """``polyvm_plan(backend, specs, settings=None) -> Plan``: declare specs (VmSpec or plain data, one or a
    list) through ``backend`` under Pulumi mocks, offline, and return the recorded resources and outputs."""

    def run(backend: Backend, specs: Any, settings: Mapping[str, Any] | None = None) -> "Plan":
        items = specs if isinstance(specs, (list, tuple)) else [specs]
        parsed = [s if isinstance(s, VmSpec) else parse_spec(s) for s in items]
        return plan_of(backend, parsed, settings)

    return run
