"""Pure rendering of the recipe's files and scripts from its inputs and an OS layout.

Templates are package data (``templates/*.j2``) read through importlib.resources; nothing here talks to
a host, so every OS family's output is unit-tested.
"""

from __future__ import annotations

import functools
import posixpath
import shlex
from importlib import resources
from typing import Any, Sequence

import jinja2

from .inputs import PostgresInputs, SettingValue
from .platform import Layout

#: A line a script prints on stdout when it changed something (the SSH layer's Script changed_marker).
CHANGED_MARKER = "polyvm:changed"


def pg_string(value: str) -> str:
    """A PostgreSQL configuration string literal: single-quoted, quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def pg_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return pg_string(str(value))


def _pgstr(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(value)
    return pg_string(str(value))


def _load(name: str) -> str:
    return (resources.files("polyvm.recipes.postgres") / "templates" / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FunctionLoader(_load), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             autoescape=False)
    env.filters["q"] = lambda v: shlex.quote(str(v))
    env.filters["pgstr"] = _pgstr
    env.filters["pgvalue"] = pg_value
    return env


def render_template(name: str, **context: Any) -> str:
    return _env().get_template(name).render(marker=CHANGED_MARKER, **context)


def ssl_files(layout: Layout) -> tuple[str, str]:
    return f"{layout.ssl_dir}/server.crt", f"{layout.ssl_dir}/server.key"


def listen_addresses(inputs: PostgresInputs) -> list[str]:
    addrs = list(inputs.listen_addresses)
    # The recipe's own login check connects over loopback.
    if inputs.allow_loopback and "*" not in addrs and "localhost" not in addrs:
        addrs.append("localhost")
    return addrs


def render_postgresql_conf(inputs: PostgresInputs, layout: Layout, *, memory_mb: int | None = None) -> str:
    """The settings drop-in (conf.d/50-polyvm.conf)."""
    crt, key = ssl_files(layout)
    return render_template("postgresql.conf.j2", listen_addresses=listen_addresses(inputs), port=inputs.port,
                           ssl_cert_file=crt, ssl_key_file=key, client_ca_file=inputs.client_ca_file,
                           settings=inputs.effective_settings(memory_mb))


def render_pg_hba(inputs: PostgresInputs, layout: Layout | None = None) -> str:
    """pg_hba.conf: local peer for postgres, hostssl + scram-sha-256 for the allowed networks only."""
    return render_template("pg_hba.conf.j2", allow_loopback=inputs.allow_loopback,
                           allowed_cidrs=list(inputs.allowed_cidrs), hba=list(inputs.hba))


def render_install_script(layout: Layout) -> str:
    from polyvm.cloudinit import wait_script

    return render_template("install.sh.j2", layout=layout, cloud_init_wait=wait_script())


def render_datadir_script(inputs: PostgresInputs, layout: Layout) -> str:
    """The cluster's parent directory on the mounted data disk (owned by postgres, SELinux-labelled)."""
    assert inputs.mount_point, "no data disk"
    return render_template("datadir.sh.j2", mount_point=inputs.mount_point,
                           data_parent=posixpath.dirname(layout.data_dir))


#: Where the server's own CA lives (made once on the server; the key stays there, root 0600).
CA_CERTIFICATE = "/etc/polyvm/postgres/ca.crt"


def render_cluster_script(inputs: PostgresInputs, layout: Layout, tls_names: Sequence[str] = ()) -> str:
    """``tls_names``: addresses or DNS names clients use besides the host's own (put in the certificate)."""
    crt, key = ssl_files(layout)
    names = [n for n in dict.fromkeys(tls_names) if n and "pending" not in n]
    return render_template("cluster.sh.j2", layout=layout, port=inputs.port, ssl_cert_file=crt, ssl_key_file=key,
                           tls_names=names)


def render_apply_script(inputs: PostgresInputs, layout: Layout) -> str:
    crt, key = ssl_files(layout)
    return render_template("apply.sh.j2", layout=layout, ssl_cert_file=crt, ssl_key_file=key)


def render_verify_script(inputs: PostgresInputs, layout: Layout) -> str:
    target = inputs.verify_target() if inputs.allow_loopback else None
    user, database = target if target else (None, None)
    return render_template("verify.sh.j2", layout=layout, port=inputs.port, user=user, database=database)


def pgpass_line(host: str, port: int, database: str, user: str, password: str) -> str:
    """One ~/.pgpass line; ':' and '\\' escaped as libpq expects."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(":", "\\:")
    return f"{esc(host)}:{port}:{esc(database)}:{esc(user)}:{esc(password)}\n"
