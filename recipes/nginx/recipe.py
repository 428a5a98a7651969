"""The nginx recipe: an HTTPS server for static files or a reverse proxy to upstreams.

    polyvm nginx -H admin@198.51.100.7 -k ~/.ssh/id_ed25519 --host-key 'ssh-ed25519 AAAA…' --upstream 10.0.0.5:8080

Steps (idempotent; an unchanged re-run changes nothing and does not reload): install nginx and openssl
when missing (and disable Debian's catch-all default site), a self-signed certificate generated on the host
for the server's names (the key never leaves it), the site configuration (and, for a static site, its
index page), then ``nginx -t`` and a start, or a reload only when a file changed. The guest firewall (ports
80/443 from the spec's ingress) is the guest baseline's, as for every recipe.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import time
import urllib.request
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polyvm.errors import RecipeError
from polyvm.host import Facts, Host
from polyvm.provisioners.steps import FilesStep, RemoteFile, Script, Step
from polyvm.recipe import Recipe


CHANGED_MARKER = "polyvm:changed"
SITE_PATH = "/etc/nginx/conf.d/polyvm.conf"
TLS_DIR = "/etc/polyvm/nginx"
CRT = f"{TLS_DIR}/server.crt"
KEY = f"{TLS_DIR}/server.key"
DEFAULT_PAGE = "<!doctype html>\n<title>polyvm</title>\n<h1>polyvm nginx on {name}</h1>\n"

_NAME_RE = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_UPSTREAM_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


class NginxInputs(BaseModel):
    """Inputs of the nginx recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server_names: list[str] = Field(default_factory=list, description="Names (DNS names or IP addresses) the "
                                    "site answers to and the certificate is for; default: the host's address.")
    upstreams: list[str] = Field(default_factory=list, description="host:port of the application servers to "
                                 "proxy to; without any, a static site is served from root.")
    root: str = Field(default="/var/www/polyvm", description="Directory of the static site.")
    index_html: str | None = Field(default=None, description="Content of root/index.html (static site); "
                                   "default: a small page naming the host. null with manage_index: false.")
    manage_index: bool = Field(default=True, description="Write root/index.html (static site).")
    https_port: int = Field(default=443, ge=1, le=65535)
    http_port: int | None = Field(default=80, ge=1, le=65535, description="Plain HTTP port that redirects "
                                  "to HTTPS; null: none.")
    cert_days: int = Field(default=825, ge=1, le=3650, description="Validity of the generated certificate.")
    client_max_body_size: str = Field(default="10m", pattern=r"^[0-9]+[kKmMgG]?$")
    proxy_timeout: int = Field(default=60, ge=1, le=3600, description="Seconds to wait for an upstream.")

    @field_validator("server_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for n in v:
            try:
                ipaddress.ip_address(n)
                continue
            except ValueError:
                pass
            if not _NAME_RE.match(n) or len(n) > 253:
                raise ValueError(f"{n!r} is not a DNS name or an IP address")
        return v

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, v: list[str]) -> list[str]:
        for u in v:
            m = _UPSTREAM_RE.match(u)
            if not m or not 1 <= int(m.group(2)) <= 65535:
                raise ValueError(f"{u!r} is not host:port (IPv6 as [address]:port)")
        return v

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._/-]+", v) or v == "/" or "/../" in f"{v}/" or "//" in v:
            raise ValueError(f"{v!r} must be an absolute path other than / (letters, digits, . _ - /)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _ports(self) -> "NginxInputs":
        if self.http_port is not None and self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        return self


@lru_cache(maxsize=None)
def _env() -> jinja2.Environment:
    import shlex

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env


def render(template: str, **values: Any) -> str:
    text = resources.files("polyvm.recipes.nginx").joinpath(f"templates/{template}").read_text()
    return _env().from_string(text).render(marker=CHANGED_MARKER, **values)


def names_for(inputs: NginxInputs, host: Host) -> list[str]:
    return list(inputs.server_names) or [host.address]


def subject_alt_names(names: list[str]) -> str:
    out = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            out.append(f"IP:{n}")
        except ValueError:
            out.append(f"DNS:{n}")
    return ",".join(out)


def render_site(inputs: NginxInputs, host: Host) -> str:
    return render("site.conf.j2", upstreams=inputs.upstreams, http_port=inputs.http_port,
                  https_port=inputs.https_port, server_names=names_for(inputs, host), crt=CRT, key=KEY,
                  root=inputs.root, client_max_body_size=inputs.client_max_body_size,
                  proxy_timeout=inputs.proxy_timeout)


def build_steps(inputs: NginxInputs, host: Host) -> list[Step]:
    """Every step for one host (pure)."""
    names = names_for(inputs, host)
    files = [RemoteFile(SITE_PATH, render_site(inputs, host), mode=0o644, owner="root", group="root")]
    if not inputs.upstreams and inputs.manage_index:
        page = inputs.index_html if inputs.index_html is not None else DEFAULT_PAGE.format(name=host.label)
        files.append(RemoteFile(f"{inputs.root}/index.html", page, mode=0o644, owner="root", group="root"))
    return [
        Script(render("install.sh.j2", root=inputs.root, tls_dir=TLS_DIR), name="install nginx",
               changed_marker=CHANGED_MARKER, detail="output"),
        Script(render("tls.sh.j2", crt=CRT, key=KEY, san=subject_alt_names(names), days=inputs.cert_days,
                      subject=f"/CN={names[0]}"), name="certificate", changed_marker=CHANGED_MARKER, detail="output"),
        FilesStep("site", files),
        Script(render("reload.sh.j2", files=[f.remote_path for f in files] + [CRT]), name="nginx",
               changed_marker=CHANGED_MARKER, detail="output"),
    ]


def https_get(url: str, *, cafile: str | None = None, cadata: str | None = None, timeout: float = 10.0,
              server_hostname: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET over HTTPS that verifies the server's certificate against ``cafile``/``cadata``."""
    ctx = ssl.create_default_context(cafile=cafile, cadata=cadata)
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:  # noqa: S310 - https only
        return resp.status, resp.read().decode(errors="replace")


class NginxRecipe(Recipe):
    """nginx as a polyvm recipe (registered as ``nginx``)."""

    name = "nginx"
    description = "nginx over HTTPS (generated certificate): a static site or a reverse proxy to upstreams"
    inputs_model = NginxInputs

    def steps(self, inputs: BaseModel, host: Host, facts: Facts) -> list[Step]:
        assert isinstance(inputs, NginxInputs)
        return build_steps(inputs, host)

    def stamp_probe(self, inputs: BaseModel, host: Host, facts: Facts) -> str | None:
        """What the steps act on besides the copied files: nginx installed, the default site, the certificate
        (and whether it is due), whether nginx runs with the configuration it was last reloaded with."""
        assert isinstance(inputs, NginxInputs)
        return render("stamp-probe.sh.j2", root=inputs.root, tls_dir=TLS_DIR, crt=CRT, key=KEY)

    def ports(self, inputs: BaseModel) -> list[int]:
        assert isinstance(inputs, NginxInputs)
        return [p for p in (inputs.http_port, inputs.https_port) if p is not None]

    def outputs(self, inputs: BaseModel, host: Host) -> dict[str, Any]:
        assert isinstance(inputs, NginxInputs)
        name = names_for(inputs, host)[0]
        shown = f"[{name}]" if ":" in name else name
        port = "" if inputs.https_port == 443 else f":{inputs.https_port}"
        return {"address": host.address, "port": inputs.https_port, "url": f"https://{shown}{port}/",
                "certificate": CRT}

    def check(self, inputs: BaseModel, host: Host, *, timeout: float = 10.0) -> str:
        """An HTTPS request from this machine. The certificate is self-signed and its key never left the host,
        so it is taken from the server on first contact and the request then verifies against it (names
        included): TLS, the certificate's names and the site are checked; the trust is first-use."""
        assert isinstance(inputs, NginxInputs)
        url = self.outputs(inputs, host)["url"]
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                pem = ssl.get_server_certificate((host.address, inputs.https_port), timeout=5)
                status, _body = https_get(url, cadata=pem, timeout=5)
                if status == 200:
                    return f"HTTPS GET {url}"
                last = f"HTTP status {status}"
            except (OSError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RecipeError(f"no HTTPS answer from {url}: {last}")

