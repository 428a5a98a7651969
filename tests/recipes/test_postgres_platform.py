"""OS detection from /etc/os-release and the per-family layout."""

from __future__ import annotations

import pytest

from polyvm.errors import RecipeError
from polyvm.recipes.postgres import layout_for, parse_os_release

OS_RELEASES = {
    "debian": ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', "debian", "12"),
    "ubuntu": ('NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', "ubuntu", "24.04"),
    "al2023": ('NAME="Amazon Linux"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n', "amazon-linux", "2023"),
    "rocky": ('NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n', "rhel", "9"),
    "alma": ('ID="almalinux"\nVERSION_ID="9.5"\n', "rhel", "9"),
    "rhel": ('ID="rhel"\nVERSION_ID="9.3"\n', "rhel", "9"),
}


@pytest.mark.parametrize("name", sorted(OS_RELEASES))
def test_parse_os_release(name):
    text, family, version = OS_RELEASES[name]
    osr = parse_os_release(text)
    assert (osr.family, osr.version) == (family, version)


def test_unsupported_os_is_a_recipe_error():
    with pytest.raises(RecipeError, match="unsupported operating system 'Alpine"):
        parse_os_release('PRETTY_NAME="Alpine Linux v3.19"\nID=alpine\nVERSION_ID=3.19.1\n')


def test_layouts():
    deb = layout_for("debian", "12", data_mount="/srv/postgresql")
    assert deb.packages == ("postgresql-15", "openssl") and deb.package_manager == "apt"
    assert deb.data_dir == "/srv/postgresql/15/main" and deb.hba_path == "/etc/postgresql/15/main/pg_hba.conf"
    assert deb.dropin_path == "/etc/postgresql/15/main/conf.d/50-polyvm.conf" and deb.filesystem == "ext4"
    assert layout_for("debian", "12").data_dir == "/var/lib/postgresql/15/main"
    al = layout_for("amazon-linux", "2023", "15")
    assert al.packages[0] == "postgresql15-server" and al.data_dir == "/var/lib/pgsql/data"
    rh = layout_for("rhel", "9")
    assert rh.packages[0] == "postgresql-server" and rh.pg_version == "13" and rh.dnf_module_stream is None
    rh16 = layout_for("rhel", "9", "16", data_mount="/data")
    assert rh16.dnf_module_stream == "postgresql:16" and rh16.data_dir == "/data/16/data"
    assert rh16.hba_path == "/data/16/data/pg_hba.conf" and rh16.filesystem == "xfs"


def test_unknown_release_needs_an_explicit_version():
    from polyvm.errors import SpecError

    with pytest.raises(SpecError, match="no default PostgreSQL version known for debian 13; set 'version'"):
        layout_for("debian", "13")
    assert layout_for("debian", "13", "17").packages[0] == "postgresql-17"
