"""``polyvm new``: a Pulumi project of one's own, ready for ``pulumi up`` on the chosen backends.

It writes ``Pulumi.yaml`` (no typed config outside the project's namespace: the Pulumi CLI refuses that),
``__main__.py`` (``polyvm.program.run``), ``requirements.txt`` naming *this* polyvm by where it was
installed from (a checkout or a wheel, never a bare name from the package index), and one commented
``Pulumi.<backend>.yaml`` per backend, built from the backend's settings model and its
``example_settings``, that ``polyvm plan --spec Pulumi.<backend>.yaml`` renders offline as written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlparse

import yaml

from . import __version__
from .backend import Backend
from .errors import ConfigError
from .spec import SUPPORTED_IMAGES

#: A Pulumi project name: sdk/go/common/tokens/names.go (NameRegexpPattern) and project.go
#: (ValidateProjectName: at most 100 characters) in pulumi/pulumi.
PROJECT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
#: A Pulumi stack name (sdk/go/common/tokens: alphanumerics, hyphens, underscores, periods).
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
#: Used when no public key file is found: a well-formed key of nobody's, to be replaced.
PLACEHOLDER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT replace-me"
#: A documentation range (RFC 5737): who may connect, until the user writes their own addresses.
PLACEHOLDER_CIDR = "203.0.113.0/24"


@dataclass(frozen=True)
class PolyvmSource:
    """Where pip finds this polyvm: ``requirement`` is a PEP 508 direct reference."""

    requirement: str
    origin: str


def polyvm_source(path: str | None, extras: Sequence[str]) -> PolyvmSource:
    """The requirement installing this polyvm: ``path`` (a checkout or a wheel) when given, else the
    place this installation came from (PEP 610 direct_url.json: an editable checkout or a wheel file)."""
    ex = f"[{','.join(sorted(set(extras)))}]" if extras else ""
    if path:
        p = Path(path).expanduser().resolve()
        _check_source(p, path)
        return PolyvmSource(f"polyvm{ex} @ {p.as_uri()}", f"--polyvm {path}")
    # Several may be visible (an installed one, and a checkout's polyvm.egg-info on sys.path): the one
    # that recorded where it was installed from (PEP 610) is the one running.
    raws = [d.read_text("direct_url.json") for d in metadata.distributions(name="polyvm")]
    raw = next((r for r in raws if r), None)
    url = json.loads(raw).get("url", "") if raw else ""
    if not url.startswith("file://"):
        raise ConfigError("cannot tell where this polyvm was installed from (no local checkout or wheel "
                          "recorded); pass --polyvm PATH: a polyvm checkout or a wheel built from one "
                          "(python -m pip wheel --no-deps -w dist .)")
    p = Path(unquote(urlparse(url).path))
    _check_source(p, str(p))
    kind = "the checkout" if p.is_dir() else "the wheel"
    return PolyvmSource(f"polyvm{ex} @ {p.as_uri()}", f"{kind} {p}")


def _check_source(p: Path, shown: str) -> None:
    if p.is_dir():
        pyproject = p / "pyproject.toml"
        if not pyproject.is_file() or not re.search(r'(?m)^name\s*=\s*"polyvm"\s*$', pyproject.read_text()):
            raise ConfigError(f"--polyvm {shown}: not a polyvm checkout (no pyproject.toml naming polyvm)")
    elif p.is_file():
        if not (p.name.startswith("polyvm-") and p.suffix == ".whl"):
            raise ConfigError(f"--polyvm {shown}: not a polyvm wheel (polyvm-<version>-*.whl)")
    else:
        raise ConfigError(f"--polyvm {shown}: no such checkout or wheel")


def _third_party_requirement(backend: Backend) -> str | None:
    """A requirement line for a backend that does not come with polyvm (its own distribution)."""
    top = type(backend).__module__.split(".")[0]
    if top == "polyvm":
        return None
    dists = metadata.packages_distributions().get(top, [])
    if not dists:
        return f"# the {backend.name} backend's package ({top}): add it here"
    dist = metadata.distribution(dists[0])
    raw = dist.read_text("direct_url.json")
    url = json.loads(raw).get("url", "") if raw else ""
    if url.startswith("file://"):
        return f"{dist.metadata['Name']} @ {url}"
    return f"{dist.metadata['Name']}=={dist.version}"


def _image(backend: Backend) -> dict[str, str]:
    families = backend.capabilities.os_families
    if "ubuntu" in families:
        return {"family": "ubuntu", "version": SUPPORTED_IMAGES["ubuntu"][-1]}
    if not families:
        raise ConfigError(f"backend {backend.name} supports no OS family here "
                          f"({backend.capabilities.notes or 'see polyvm backends'})")
    fam = sorted(families)[0]
    return {"family": fam, "version": SUPPORTED_IMAGES[fam][-1]}


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()  # a plain scalar is dumped as a document: drop its end marker


def _comment(text: str, indent: str) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + len(w) + 1 > 96 - len(indent):
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return [f"{indent}# {ln}" for ln in lines]


def stack_file(backend: Backend, *, public_key: str, private_key_path: str | None, cidrs: Sequence[str],
               postgres: bool = True) -> str:
    """The commented ``Pulumi.<backend>.yaml`` of a new project: the backend, its settings (every field,
    with its description), one VM spec and, with ``postgres``, the PostgreSQL recipe's inputs."""
    caps = backend.capabilities
    out = [f"# Stack {backend.name}: {backend.description}.",
           f"#   pulumi stack init {backend.name}      # this file is its config",
           f"#   polyvm plan --spec Pulumi.{backend.name}.yaml   # offline: what `pulumi up` would declare",
           "#   pulumi up",
           "# The VM spec is docs/spec.md; the settings are docs/backends.md.",
           "config:"]
    for key, value in backend.example_provider_config.items():
        out.append(f"  {key}: {_flow(value)}")
    out.append(f"  polyvm:backend: {backend.name}")
    fields: list[str] = []
    written = 0
    for fname, finfo in backend.settings_model.model_fields.items():
        if finfo.description:
            fields += _comment(finfo.description, "    ")
        if fname in backend.example_settings:
            fields.append(f"    {fname}: {_flow(backend.example_settings[fname])}")
            written += 1
        elif finfo.is_required():
            fields.append(f"    {fname}: CHANGE-ME      # required")
            written += 1
        else:
            fields.append(f"    # {fname}: {_flow(finfo.get_default(call_default_factory=True))}")
    # Every field with a default stays commented out; a mapping of comments only would be null.
    out.append(f"  polyvm:{backend.name}:" + ("" if written else " {}   # every setting has a default:"))
    out += fields
    img = _image(backend)
    out += ["  polyvm:vm:",
            "    name: db1",
            "    size: {cpus: 2, memory_gb: 4}",
            f"    image: {_flow(img)}",
            "    root_disk_gb: 30"]
    if caps.max_data_disks > 0:
        out += ["    data_disks:",
                "      - {name: pgdata, size_gb: 20, mount_point: /var/lib/postgresql}"]
    placeholder = list(cidrs) == [PLACEHOLDER_CIDR]
    out += ["    ingress:"]
    if placeholder:
        out.append(f"      # {PLACEHOLDER_CIDR} is a documentation range: write the addresses that may connect")
    out += [f"      - {{port: 22, cidrs: {_flow(list(cidrs))}, description: admin ssh}}",
            f"      - {{port: 5432, cidrs: {_flow(list(cidrs))}, description: postgresql clients}}",
            "    ssh:",
            "      user: polyvm"]
    if public_key == PLACEHOLDER_KEY:
        out.append("      # replace with your own public key (the contents of ~/.ssh/id_ed25519.pub)")
    out += [f"      public_key: {public_key}",
            "    tags: {env: dev}"]
    if postgres:
        out += ["  # The PostgreSQL recipe on the VM (docs/postgres.md); remove this block for the VM alone.",
                "  polyvm:postgres:",
                "    users: [{name: app}]     # no password given: a generated secret (pulumi stack output --show-secrets)",
                "    databases: [{name: app, owner: app}]"]
    out += ["  # The private half of polyvm:vm.ssh.public_key, for the steps over SSH (the recipe, the guest",
            "  # firewall, data disks), or as a secret: pulumi config set --secret polyvm:sshPrivateKey \"$(cat KEY)\"",
            f"  polyvm:sshPrivateKeyPath: {private_key_path or '~/.ssh/id_ed25519'}"]
    return "\n".join(out) + "\n"


def _default_cidrs(backend: Backend) -> list[str]:
    """Who may connect until the user says: the networks a backend's VMs can reach when that is not
    everywhere (a local host talks to this machine only), else a documentation range to replace."""
    reach = sorted({cidr for *_rest, cidr in backend.egress_rules})
    if reach and not set(reach) & {"0.0.0.0/0", "::/0"}:
        return reach
    return [PLACEHOLDER_CIDR]


def _template(name: str) -> str:
    return resources.files("polyvm").joinpath("templates", "new", name).read_text()


def _render(name: str, **values: Any) -> str:
    import jinja2

    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(_template(name)).render(**values)


def find_public_key(path: str | None) -> tuple[str, str | None]:
    """(public key line, private key path) from ``path`` or the first of ~/.ssh/id_{ed25519,ecdsa,rsa}.pub;
    the placeholder key when none is found."""
    candidates = [Path(path).expanduser()] if path else [Path.home() / ".ssh" / f"id_{k}.pub"
                                                         for k in ("ed25519", "ecdsa", "rsa")]
    for c in candidates:
        if c.is_file():
            line = c.read_text().strip().splitlines()[0] if c.read_text().strip() else ""
            if not line.startswith(("ssh-", "ecdsa-")):
                raise ConfigError(f"--ssh-key {c}: not an OpenSSH public key file")
            priv = str(c)[:-4] if str(c).endswith(".pub") else None
            return line, priv
        if path:
            raise ConfigError(f"--ssh-key {path}: no such file")
    return PLACEHOLDER_KEY, None


def new_project(directory: str, backends: Sequence[Backend], *, name: str | None = None,
                polyvm_path: str | None = None, ssh_key: str | None = None, cidrs: Sequence[str] = (),
                postgres: bool = True) -> list[Path]:
    """Write the project into ``directory`` (which must not exist or be empty); return the files written."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{directory} already exists and is not empty; polyvm new writes only into a new "
                          "or empty directory")
    if not backends:
        raise ConfigError("name at least one backend: --backend aws (polyvm backends lists them)")
    project = name or target.resolve().name
    if not PROJECT_NAME.fullmatch(project):
        raise ConfigError(f"project name {project!r}: Pulumi allows only letters, digits, '-', '_' and '.' "
                          "(at most 100); pass --name")
    from .spec import IngressRule

    for c in cidrs:
        try:
            IngressRule(port=22, cidrs=[c])
        except Exception:  # pydantic's ValidationError: say it in one line
            raise ConfigError(f"--allow {c}: not a CIDR (e.g. 198.51.100.0/24)") from None
    extras = [b.extra for b in backends if b.extra and type(b).__module__.startswith("polyvm.")]
    if postgres:
        extras.append("postgres")
    source = polyvm_source(polyvm_path, extras)
    public_key, private_key_path = find_public_key(ssh_key)
    extra_lines = [line for line in (_third_party_requirement(b) for b in backends) if line]
    first = backends[0].name
    files = {
        "Pulumi.yaml": _render("Pulumi.yaml.j2", project=project, version=__version__,
                               description=f"VMs from polyvm specs on {', '.join(b.name for b in backends)}"
                                           + (", turned into PostgreSQL servers" if postgres else "")),
        "__main__.py": _render("__main__.py.j2", project=project, first_backend=first),
        "requirements.txt": _render("requirements.txt.j2", origin=source.origin,
                                    polyvm_requirement=source.requirement, extra_lines=extra_lines),
        ".gitignore": _render(".gitignore.j2"),
    }
    for be in backends:
        if not _STACK_NAME.fullmatch(be.name):
            raise ConfigError(f"backend name {be.name!r} is not a valid Pulumi stack name")
        files[f"Pulumi.{be.name}.yaml"] = stack_file(be, public_key=public_key, private_key_path=private_key_path,
                                                    cidrs=list(cidrs) or _default_cidrs(be), postgres=postgres)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in files.items():
        path = target / fname
        path.write_text(text)
        written.append(path)
    return written
