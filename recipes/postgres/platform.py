"""Where PostgreSQL lives on each OS family: packages, paths and how the server is started.

Pure: :func:`parse_os_release` (polyvm.host's) reads /etc/os-release text, :func:`layout_for` returns a
:class:`Layout` for a family, OS version and PostgreSQL major version. No host is contacted here.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyvm.errors import RecipeError
from polyvm.host import Facts
from polyvm.host import parse_os_release as _parse_os_release

from .inputs import DEFAULT_VERSIONS, default_version

#: What the recipe knows of the OS: polyvm's hand-over facts (family, version, pretty name, RAM).
OsRelease = Facts
parse_os_release = _parse_os_release


@dataclass(frozen=True)
class Layout:
    """Paths, packages and commands for one (family, PostgreSQL version, data location)."""

    family: str                      # debian | ubuntu | amazon-linux | rhel
    os_version: str
    pg_version: str
    packages: tuple[str, ...]        # what must be installed
    package_manager: str             # apt | dnf
    config_dir: str                  # where postgresql.conf lives
    data_dir: str
    hba_path: str
    dropin_dir: str                  # conf.d directory included by postgresql.conf
    dropin_path: str
    ssl_dir: str
    bin_dir: str
    filesystem: str                  # for a blank data disk
    cluster: str = "main"            # Debian cluster name
    service: str = "postgresql"      # RHEL-family systemd unit
    dnf_module_stream: str | None = None   # RHEL 9: "postgresql:15" for non-default versions

    @property
    def debian_like(self) -> bool:
        return self.family in ("debian", "ubuntu")

    @property
    def stamp_path(self) -> str:
        return f"/var/lib/polyvm/postgresql-{self.pg_version}.applied"


def layout_for(family: str, os_version: str, pg_version: str | None = None, *,
               data_mount: str | None = None) -> Layout:
    """The layout for an OS; ``data_mount`` is where the data disk is mounted (None: no data disk)."""
    v = pg_version or default_version(family, os_version)
    if family in ("debian", "ubuntu"):
        conf = f"/etc/postgresql/{v}/main"
        data = f"{data_mount}/{v}/main" if data_mount else f"/var/lib/postgresql/{v}/main"
        return Layout(family=family, os_version=os_version, pg_version=v,
                      packages=(f"postgresql-{v}", "openssl"), package_manager="apt",
                      config_dir=conf, data_dir=data, hba_path=f"{conf}/pg_hba.conf",
                      dropin_dir=f"{conf}/conf.d", dropin_path=f"{conf}/conf.d/50-polyvm.conf",
                      ssl_dir=conf, bin_dir=f"/usr/lib/postgresql/{v}/bin", filesystem="ext4")
    if family in ("amazon-linux", "rhel"):
        data = f"{data_mount}/{v}/data" if data_mount else "/var/lib/pgsql/data"
        if family == "amazon-linux":
            packages: tuple[str, ...] = (f"postgresql{v}-server", "openssl")
            stream = None
        else:
            packages = ("postgresql-server", "openssl")
            stream = None if (family, os_version) in DEFAULT_VERSIONS and v == default_version(family, os_version) \
                else f"postgresql:{v}"
        return Layout(family=family, os_version=os_version, pg_version=v, packages=packages,
                      package_manager="dnf", config_dir=data, data_dir=data, hba_path=f"{data}/pg_hba.conf",
                      dropin_dir=f"{data}/conf.d", dropin_path=f"{data}/conf.d/50-polyvm.conf",
                      ssl_dir=data, bin_dir="/usr/bin", filesystem="xfs", dnf_module_stream=stream)
    raise RecipeError(f"unsupported OS family {family!r}")
